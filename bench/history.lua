-- wrk script for bench/history.py: GETs of lead histories with a Bearer token.
-- Arguments after "--": the file of request paths (one per line), the token, the thread count.
-- Each thread starts at its own offset and steps by the thread count through the (shuffled) paths.

local paths = {}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do table.insert(paths, line) end
  f:close()
  token = args[2]
  nthreads = tonumber(args[3])
  index = tid + 1
  sent = 0
  non2xx = 0
end

function request()
  local path = paths[index]
  index = index + nthreads
  if index > #paths then index = (index - 1) % nthreads + 1 end
  sent = sent + 1
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end

function response(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests_stats)
  local total_sent, total_non2xx = 0, 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    total_non2xx = total_non2xx + t:get("non2xx")
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "sent": %d, "non2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, total_sent, total_non2xx, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
