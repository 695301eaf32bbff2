// Package envnames names every environment variable baton defines, and
// says for each who sets it and who reads it. The names are the contract
// between processes that do not share memory (the master, its helpers, a
// worker, a hook, a test), so each is spelled here once: a name spelled
// twice can drift, and the user meets the drift first. A test of the
// contract itself (a worker reading BATON_GENERATION) spells the name on
// purpose, as a user's program does.
//
// The names of protocols baton speaks but does not define (systemd's
// LISTEN_FDS, NOTIFY_SOCKET, …) are not here.
//
// The package imports nothing, so the helpers that run from an init
// function (internal/execshim, internal/parentstub, internal/keeper) stay
// as cheap to start as they were.
package envnames

// What every worker is told. Everything a worker starts inherits it too,
// which is how the master recognises a worker's descendants.
const (
	// Generation is the worker's generation: 1 for the first, one more at
	// each reload. The master sets it in each worker's environment, and in
	// a hook's (the generation the hook is about). A Go worker reads it
	// with listener.Generation; the keeper reads it from /proc/PID/environ
	// to tell which generation a stray process belongs to.
	Generation = "BATON_GENERATION"
	// WorkerIndex is the worker's slot in its generation, 0 to Workers-1,
	// and Workers the number of slots (--workers). The master is to set
	// both in each worker's environment once a generation is a set of
	// slots; a worker reads them to tell itself from its siblings.
	WorkerIndex = "BATON_WORKER_INDEX"
	Workers     = "BATON_WORKERS"
)

// What a lifecycle hook (--on-ready, --on-stopping) is told besides
// Generation. The master sets them; the user's hook command reads them.
const (
	// Hook is which hook runs: on-ready or on-stopping.
	Hook = "BATON_HOOK"
	// WorkerPID is the main process of the generation the hook is about.
	WorkerPID = "BATON_WORKER_PID"
	// WorkerPIDs is, in a hook, every serving worker's PID of the
	// generation it is about, comma-separated, by slot. Set by the master.
	WorkerPIDs = "BATON_WORKER_PIDS"
	// MasterPID is the master's PID, set by the master in every worker's
	// and hook's environment. Everything they start inherits it, which
	// is how the keeper finds, once the master is gone, a process whose
	// link to a worker or hook was cut (it moved to a session of its own
	// and its parent exited).
	MasterPID = "BATON_MASTER_PID"
	// Addrs lists the bound sockets, name=address,… in --listen order.
	Addrs = "BATON_ADDRS"
)

// The helper modes of the baton binary. The master starts its own
// executable with one of these set, and internal/reexec.Init, which
// cmd/baton's main calls first, runs that helper instead of a baton
// command.
const (
	// ExecShim is the path of a worker program: the process sets
	// LISTEN_PID to its own PID and execs that program in place
	// (internal/execshim). Set for each worker by the master (see
	// internal/sockets.ShimVar) and for its app by a parent stub.
	ExecShim = "BATON_EXEC_SHIM"
	// Keeper is a keeper's configuration (internal/keeper's
	// Config.String). Set by the master when it starts its keeper; read
	// by internal/keeper.
	Keeper = "BATON_KEEPER"
	// ParentStub is the path of the app a generation's parent stub starts
	// (--protocol endless or grace). Set by the master; read by
	// internal/parentstub, as are the two below.
	ParentStub = "BATON_PARENT_STUB"
	// StubControl is the stub's descriptor of the master's signal pipe;
	// the descriptors from 3 up to it are the app's, passed on as they are.
	StubControl = "BATON_STUB_CONTROL"
	// StubDrain is the number of the drain signal.
	StubDrain = "BATON_STUB_DRAIN"
	// Umask is the worker's umask, in octal (--umask). Set by the master
	// for the exec shim, which sets it and removes the variable.
	Umask = "BATON_UMASK"
	// UpgradeCheck makes the binary a master upgrading in place would
	// exec check what it would be handed (read on stdin) and its flags,
	// print its version and exit. Set by the master for that check run;
	// read by cmd/baton.
	UpgradeCheck = "BATON_UPGRADE_CHECK"
	// UpgradeState is the descriptor of the state a master hands to its
	// own new image in an in-place upgrade (upgrader.HandOver, JSON). Set
	// by the old image just before the exec; read and removed by the new
	// image (upgrader.TakeHandOver).
	UpgradeState = "BATON_UPGRADE_STATE"
	// UpgradeImage is the descriptor of the binary a master executed in
	// an in-place upgrade (host.Image), left open across the exec so that
	// a script can be that binary. Set by the old image; the new one
	// closes it and removes the variable (host.TakeState).
	UpgradeImage = "BATON_UPGRADE_IMAGE"
)

// Knobs of baton's own test suite, set by whoever runs the tests and read
// by the tests and their helpers; baton itself never reads them.
const (
	// TestCache is where the systemd test keeps the root filesystem it
	// builds (default /var/cache/baton-test).
	TestCache = "BATON_TEST_CACHE"
	// TestDebianMirror is the Debian archive a test root filesystem is
	// built from (default: the one this machine's apt uses).
	TestDebianMirror = "BATON_TEST_DEBIAN_MIRROR"
	// SoakReloads is how many reloads the soak test makes (default 30).
	SoakReloads = "BATON_SOAK_RELOADS"
	// IdleSeconds is how long the idle test watches an idle master's CPU
	// time, in seconds (default 2).
	IdleSeconds = "BATON_IDLE_SECONDS"
)
