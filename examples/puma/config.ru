# A Rack app for puma under baton:
#   baton --listen http=tcp://127.0.0.1:9292 --ready accepting -- \
#       env -u NOTIFY_SOCKET puma -C puma.rb -b tcp://127.0.0.1:9292 config.ru
gen = ENV.fetch('BATON_GENERATION', 'none')
run lambda { |env|
  size = env['rack.input'].read.bytesize
  [200, { 'Content-Type' => 'text/plain' }, ["gen=#{gen} pid=#{Process.pid} read=#{size}\n"]]
}
