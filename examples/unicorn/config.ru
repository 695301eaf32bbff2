# A Rack app for unicorn under baton:
#   baton --listen http=tcp://127.0.0.1:8080 --ready accepting --drain-signal QUIT --dir examples/unicorn -- \
#       unicorn -c unicorn.rb config.ru
# /slow?d=SECONDS answers after that long: a reload lets it finish.
gen = ENV.fetch('BATON_GENERATION', 'none')
run lambda { |env|
  size = env['rack.input'].read.bytesize
  if env['PATH_INFO'] == '/slow'
    d = Float(Rack::Utils.parse_query(env['QUERY_STRING']).fetch('d', '1').chomp('s'))
    $stderr.write("config.ru: slow request started pid=#{Process.pid}\n")
    sleep d
    next [200, { 'Content-Type' => 'text/plain' }, ["slow done after #{d}s gen=#{gen} pid=#{Process.pid}\n"]]
  end
  [200, { 'Content-Type' => 'text/plain' }, ["gen=#{gen} pid=#{Process.pid} read=#{size}\n"]]
}
