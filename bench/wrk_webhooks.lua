-- wrk -t T -c C -d D -s bench/wrk_webhooks.lua URL -- FILE T
-- FILE holds one pre-signed delivery per line: "<Stripe-Signature>\t<JSON body>". Thread k sends lines
-- k, k+T, k+2T, ... so no two threads send the same event; done() prints one JSON line of figures.
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local threads = tonumber(args[2])
  prepared = {}
  local n = 0
  for line in io.lines(args[1]) do
    if n % threads == id then
      local signature, body = line:match("^([^\t]*)\t(.*)$")
      local headers = {["Stripe-Signature"] = signature, ["Content-Type"] = "application/json"}
      prepared[#prepared + 1] = wrk.format("POST", "/webhooks/stripe", headers, body)
    end
    n = n + 1
  end
  index = 0
end

function request()
  index = index % #prepared + 1
  return prepared[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
