# A Rack app for puma with LISTEN_FDS. Loading it waits until stdin
# closes, so a test can check that puma holding the socket while it boots
# is not yet waiting on it.
$stdout.puts "holding"
$stdout.flush
$stdin.read

run ->(env) { [200, { "Content-Type" => "text/plain" }, ["hello\n"]] }
