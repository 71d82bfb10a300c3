package remote

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/uplinkd/uplinkd/publish"
)

// rfc2136 replaces the A (or AAAA) record of Hostname in Zone with a DNS
// UPDATE signed with TSIG, sent to the zone's primary over UDP, and again
// over TCP when the reply is truncated.
type rfc2136 struct {
	spec   publish.Spec
	zone   string // FQDN
	name   string // FQDN
	server string // host:port
	key    tsigKey
	dial   func(ctx context.Context, network, address string) (net.Conn, error) // nil: the client's own
}

// tsigKey is a key from a BIND-format key file, as tsig-keygen writes it:
//
//	key "name" { algorithm hmac-sha256; secret "base64"; };
type tsigKey struct {
	name      string // FQDN
	algorithm string // dns.HmacSHA256, ...
	secret    string // base64, as miekg/dns wants it
}

var tsigAlgorithms = map[string]string{
	"hmac-md5": dns.HmacMD5, "hmac-md5.sig-alg.reg.int": dns.HmacMD5,
	"hmac-sha1": dns.HmacSHA1, "hmac-sha224": dns.HmacSHA224, "hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384, "hmac-sha512": dns.HmacSHA512,
}

func newRFC2136(spec publish.Spec, opts publish.PublisherOptions) (*rfc2136, error) {
	if spec.Zone == "" || spec.Hostname == "" || spec.Server == "" {
		return nil, errors.New("rfc2136: server, zone and hostname must be set")
	}
	name, zone := dns.Fqdn(strings.ToLower(spec.Hostname)), dns.Fqdn(strings.ToLower(spec.Zone))
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("rfc2136: hostname %q is not a domain name", spec.Hostname)
	}
	if !dns.IsSubDomain(zone, name) {
		return nil, fmt.Errorf("rfc2136: hostname %s is not inside zone %s", name, zone)
	}
	server := spec.Server
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	key, err := parseTSIGKeyFile(spec.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("rfc2136: %w", err)
	}
	return &rfc2136{spec: spec, zone: zone, name: name, server: server, key: key, dial: opts.Dial}, nil
}

func (r *rfc2136) Publish(ctx context.Context, req publish.Request) publish.Result {
	// Re-read the key: a rotated key works without a reload.
	key, err := parseTSIGKeyFile(r.spec.KeyFile)
	if err != nil {
		return publish.Result{Outcome: publish.Permanent, Err: fmt.Errorf("rfc2136: %w", err)}
	}
	hdr := dns.RR_Header{Name: r.name, Class: dns.ClassINET, Ttl: uint32(r.spec.TTL / time.Second)}
	var rr dns.RR
	if req.Addr.Is4() {
		hdr.Rrtype = dns.TypeA
		rr = &dns.A{Hdr: hdr, A: req.Addr.AsSlice()}
	} else {
		hdr.Rrtype = dns.TypeAAAA
		rr = &dns.AAAA{Hdr: hdr, AAAA: req.Addr.AsSlice()}
	}
	m := new(dns.Msg)
	m.SetUpdate(r.zone)
	m.RemoveRRset([]dns.RR{rr}) // every record of this name and type...
	m.Insert([]dns.RR{rr})      // ...replaced by this one, atomically
	m.SetTsig(key.name, key.algorithm, 300, time.Now().Unix())

	resp, err := r.exchange(ctx, key, m, "udp")
	if err == nil && resp.Truncated {
		resp, err = r.exchange(ctx, key, m, "tcp")
	}
	where := fmt.Sprintf("rfc2136 %s in %s at %s", r.name, r.zone, r.server)
	if resp != nil && resp.Rcode != dns.RcodeSuccess {
		return rcodeResult(where, resp)
	}
	if err != nil {
		switch {
		case errors.Is(err, dns.ErrTime):
			return publish.Result{Outcome: publish.Retry, Reply: "BADTIME", Err: fmt.Errorf("%s: TSIG time check failed (clock skew?): %w", where, err)}
		case errors.Is(err, dns.ErrSig), errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrKeyAlg), errors.Is(err, dns.ErrAuth):
			return publish.Result{Outcome: publish.Permanent, Reply: "TSIG", Err: fmt.Errorf("%s: TSIG: %w", where, err)}
		default:
			return publish.Result{Outcome: publish.Retry, Err: fmt.Errorf("%s: %w", where, err)}
		}
	}
	return publish.Result{Outcome: publish.OK, Reply: dns.RcodeToString[resp.Rcode]}
}

func (r *rfc2136) exchange(ctx context.Context, key tsigKey, m *dns.Msg, network string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: r.spec.Timeout, TsigSecret: map[string]string{key.name: key.secret}}
	if r.dial == nil {
		resp, _, err := c.ExchangeContext(ctx, m, r.server)
		return resp, err
	}
	conn, err := r.dial(ctx, network, r.server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: conn})
	return resp, err
}

// rcodeResult classifies an error reply: SERVFAIL (and a TSIG BADTIME, a
// clock that may get fixed) is retried; NOTAUTH, REFUSED, NOTZONE,
// YXDOMAIN, FORMERR, NOTIMP and TSIG failures need a config change.
func rcodeResult(where string, resp *dns.Msg) publish.Result {
	reply := dns.RcodeToString[resp.Rcode]
	tsigErr := ""
	if t := resp.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
		tsigErr = dns.RcodeToString[int(t.Error)]
		reply += "/" + tsigErr
	}
	err := fmt.Errorf("%s: server answered %s", where, reply)
	if resp.Rcode == dns.RcodeServerFailure || tsigErr == "BADTIME" {
		return publish.Result{Outcome: publish.Retry, Reply: reply, Err: err}
	}
	return publish.Result{Outcome: publish.Permanent, Reply: reply, Err: err}
}

// parseTSIGKeyFile reads the first key of a BIND key file (mode checked).
// Errors describe the syntax problem without quoting the file.
func parseTSIGKeyFile(path string) (tsigKey, error) {
	b, err := publish.ReadSecretFile("key_file", path)
	if err != nil {
		return tsigKey{}, err
	}
	toks, err := bindTokens(string(b))
	if err != nil {
		return tsigKey{}, fmt.Errorf("key_file %s: %w", path, err)
	}
	bad := func(msg string) (tsigKey, error) {
		return tsigKey{}, fmt.Errorf("key_file %s: %s (want: key \"name\" { algorithm hmac-sha256; secret \"...\"; };)", path, msg)
	}
	if len(toks) < 3 || toks[0] != "key" || toks[2] != "{" {
		return bad("no key statement")
	}
	k := tsigKey{name: dns.Fqdn(strings.ToLower(toks[1]))}
	if _, ok := dns.IsDomainName(k.name); !ok {
		return bad("key name is not a domain name")
	}
	i := 3
	for ; i < len(toks) && toks[i] != "}"; i += 3 {
		if i+2 >= len(toks) || toks[i+2] != ";" {
			return bad("expected `option value;` inside the key")
		}
		switch toks[i] {
		case "algorithm":
			alg, ok := tsigAlgorithms[strings.ToLower(toks[i+1])]
			if !ok {
				return bad(fmt.Sprintf("unsupported algorithm %q", toks[i+1]))
			}
			k.algorithm = alg
		case "secret":
			if _, err := base64.StdEncoding.DecodeString(toks[i+1]); err != nil || toks[i+1] == "" {
				return bad("secret is not base64")
			}
			k.secret = toks[i+1]
		default:
			return bad(fmt.Sprintf("unknown option %q", toks[i]))
		}
	}
	if i >= len(toks) {
		return bad("missing }")
	}
	if k.algorithm == "" || k.secret == "" {
		return bad("algorithm and secret are required")
	}
	return k, nil
}

// bindTokens splits named.conf syntax into words, quoted strings (without
// quotes), and the punctuation { } ;, dropping # // and /* */ comments.
func bindTokens(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#' || strings.HasPrefix(s[i:], "//"):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case strings.HasPrefix(s[i:], "/*"):
			j := strings.Index(s[i+2:], "*/")
			if j < 0 {
				return nil, errors.New("unterminated comment")
			}
			i += j + 4
		case c == '{' || c == '}' || c == ';':
			toks = append(toks, string(c))
			i++
		case c == '"':
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				return nil, errors.New("unterminated string")
			}
			toks = append(toks, s[i+1:i+1+j])
			i += j + 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n{};\"#", rune(s[j])) {
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}
