package publish

import (
	"os"
	"testing"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// TestMain guards the host: the lab tests (lab_test.go) work in namespaces
// of their own, and GuardMain fails the run if the host namespace's rules,
// routes, links or netfilter state changed anyway.
func TestMain(m *testing.M) {
	os.Exit(lab.GuardMain(m))
}
