// Command mangen turns the manual pages' markdown sources (docs/man/*.md,
// which the README links as documentation) into roff with go-md2man, so
// that the docs and `man uplinkd` are one text. `make deb` and `make
// install` run it; the roff files are build output, never committed.
//
//	go run ./internal/mangen -version 0.3.0 -date 2026-12-05 -out DIR docs/man/uplinkd.8.md ...
//
// A source is named NAME.SECTION.md and starts with its NAME section: the
// .TH line (title, section, date, version, manual) comes from the file name
// and the flags, so the markdown carries no pandoc title block that a
// markdown viewer would show as text.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
)

// manuals are the man-pages(7) manual names of the sections uplinkd has.
var manuals = map[string]string{
	"1": "General Commands Manual",
	"5": "File Formats Manual",
	"8": "System Manager's Manual",
}

func main() {
	version := flag.String("version", "", "the package version, shown in the page footer")
	date := flag.String("date", "", "the page date (YYYY-MM-DD), shown in the page footer")
	out := flag.String("out", "", "the directory the roff files go to (NAME.SECTION)")
	flag.Parse()
	if *version == "" || *date == "" || *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: mangen -version V -date YYYY-MM-DD -out DIR NAME.SECTION.md...")
		os.Exit(2)
	}
	for _, src := range flag.Args() {
		if err := convert(src, *out, *version, *date); err != nil {
			fmt.Fprintf(os.Stderr, "mangen: %v\n", err)
			os.Exit(1)
		}
	}
}

// convert writes DIR/NAME.SECTION from NAME.SECTION.md.
func convert(src, dir, version, date string) error {
	base := strings.TrimSuffix(filepath.Base(src), ".md")
	dot := strings.LastIndexByte(base, '.')
	if dot <= 0 || base+".md" != filepath.Base(src) {
		return fmt.Errorf("%s: want a name of the form NAME.SECTION.md", src)
	}
	name, section := base[:dot], base[dot+1:]
	manual, ok := manuals[section]
	if !ok {
		return fmt.Errorf("%s: no manual known for section %q", src, section)
	}
	md, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(md, []byte("# NAME\n")) {
		// man-db's lexgrog finds the whatis line only in a NAME section
		// that comes first.
		return fmt.Errorf("%s: must start with \"# NAME\"", src)
	}
	// A pandoc title block: go-md2man makes it the .TH line.
	title := fmt.Sprintf("%% %s %s %q %q %q\n\n", strings.ToUpper(name), section, date, "uplinkd "+version, manual)
	roff := md2man.Render(append([]byte(title), md...))
	return os.WriteFile(filepath.Join(dir, base), roff, 0o644)
}
