# unicorn's configuration under baton (unicorn -c unicorn.rb config.ru).
#
# No `listen` here and no -l: unicorn takes baton's socket from LISTEN_FDS
# itself (LISTEN_PID is its master's PID), and binds nothing else. (A
# `listen` with the same address is taken to mean that socket.)
#
# Drain with QUIT (baton --drain-signal QUIT): unicorn's graceful stop,
# each worker finishing its request. TERM, baton's default, is unicorn's
# quick stop, which cuts the requests in flight.
#
# unicorn never keeps a connection alive: every response says
# "Connection: close", so there is no idle connection for a stop to cut.
worker_processes 2

# A worker stuck on one request longer than this is killed. Keep it below
# baton's --drain-timeout (30 s by default).
timeout 25

# Load the app once in the master, before forking the workers.
preload_app true
