-- wrk -t T -c C -d D -s bench/wrk_reads.lua URL -- CUSTOMERS TOKEN
-- Random customers of the populated table, read through GET /v1/customers/<id>/entitlements.
function init(args)
  customers = tonumber(args[1])
  headers = {["Authorization"] = "Bearer " .. args[2]}
  math.randomseed(os.time() + (id or 0))
end

function request()
  return wrk.format("GET", "/v1/customers/cus_" .. math.random(0, customers - 1) .. "/entitlements", headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
