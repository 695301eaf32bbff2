# puma's configuration under baton (puma -C puma.rb).
#
# With queue_requests (the default), puma's graceful stop closes at once
# every connection its reactor holds waiting for a request: a keep-alive
# connection between two requests, or one just accepted. A request already
# on its way there is lost, and a client never resends a POST. Without it,
# each accepted connection has a thread that reads its request and answers
# it with "Connection: close", and the stop waits for those threads: no
# request is lost, at the price of HTTP keep-alive (a proxy in front, such
# as nginx, keeps its own connections to clients).
queue_requests false

# A connection that sends nothing is closed after 5 s (the default, 30 s,
# is baton's whole --drain-timeout).
first_data_timeout 5

# After its graceful stop, exit 0 rather than re-raise SIGTERM.
raise_exception_on_sigterm false
