package publish

import (
	"os"
	"testing"

	"github.com/uplinkd/uplinkd/internal/helper/helpertest"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// TestMain builds uplinkd-helper, which checks dyndns2 and rfc2136 specs
// for publish.New, and guards the host: GuardMain fails the run if the host
// namespace's rules, routes, links or netfilter state changed.
func TestMain(m *testing.M) {
	os.Exit(helpertest.HelperMain(func() int { return lab.GuardMain(m) }))
}
