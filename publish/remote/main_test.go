package remote

import (
	"os"
	"testing"

	"github.com/uplinkd/uplinkd/internal/helper/helpertest"
	"github.com/uplinkd/uplinkd/internal/lab"
)

// TestMain builds uplinkd-helper for the tests that publish through it
// (the manager's tests: publish.New runs these publishers in the helper),
// and guards the host: the lab tests work in namespaces of their own, and
// GuardMain fails the run if the host namespace's rules, routes, links or
// netfilter state changed anyway.
func TestMain(m *testing.M) {
	os.Exit(helpertest.HelperMain(func() int { return lab.GuardMain(m) }))
}
