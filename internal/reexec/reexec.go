// Package reexec owns the choice, made at the top of baton's main, between
// running baton's command line and being one of the helpers that the master
// starts by exec'ing its own binary: a worker's exec shim
// (internal/execshim), a generation's parent stub (internal/parentstub) or
// the master's keeper (internal/keeper). The environment the master sets
// selects the helper. Importing this package, or any of the helpers, does
// nothing: main calls Init, first, and the choice is visible there.
package reexec

import (
	"os"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/execshim"
	"github.com/baton-sh/baton/internal/keeper"
	"github.com/baton-sh/baton/internal/parentstub"
)

// Init runs the helper this process was started as, if any, and reports
// whether it ran one; when it returns false, nothing has happened and the
// caller goes on as baton. At most one helper's variable is ever set by
// the master; were several set, the exec shim wins over the parent stub,
// and the stub over the keeper.
//
//   - The exec shim (envnames.ExecShim) execs the worker in place of this
//     process: Init never returns.
//   - The parent stub (envnames.ParentStub) exits with the app's status once the
//     app has exited: Init never returns.
//   - The keeper (envnames.Keeper) runs until the master is gone and what it
//     left has been drained or killed; then Init returns true and the
//     caller should return from main, which exits 0. A bad keeper
//     configuration exits 2 from Init.
func Init() bool {
	if worker, ok := os.LookupEnv(envnames.ExecShim); ok {
		execshim.Run(worker)
	}
	if app, ok := os.LookupEnv(envnames.ParentStub); ok {
		os.Exit(parentstub.Run(app))
	}
	if config, ok := os.LookupEnv(envnames.Keeper); ok {
		if code := keeper.Run(config); code != 0 {
			os.Exit(code)
		}
		return true
	}
	return false
}
