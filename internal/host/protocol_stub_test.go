package host

import (
	"testing"

	"github.com/baton-sh/baton/internal/parentstub"
)

func TestParentStubNamesAgree(t *testing.T) {
	if stubEnv != parentstub.Env || stubEnvControl != parentstub.EnvControl || stubEnvDrain != parentstub.EnvDrain {
		t.Fatal("upgrader and internal/parentstub disagree on the stub's environment")
	}
}
