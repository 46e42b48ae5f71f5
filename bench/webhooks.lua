-- wrk script for bench/webhooks.py: replays pre-signed webhook deliveries, one unique delivery per request.
-- The request file holds 4 lines per delivery: path, signature header name, signature value, JSON body.
-- Each wrk thread starts at its own offset and steps by the thread count, so no two threads send the
-- same delivery; the bench sizes the file so no thread wraps around within the run.

local requests = {}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file = args[1]
  nthreads = tonumber(args[2])
  local f = assert(io.open(file, "r"))
  while true do
    local path = f:read("*l")
    if not path then break end
    local header = f:read("*l")
    local value = f:read("*l")
    local body = f:read("*l")
    local headers = {}
    headers["Content-Type"] = "application/json"
    headers[header] = value
    table.insert(requests, wrk.format("POST", path, headers, body))
  end
  f:close()
  index = tid + 1
  sent = 0
  non2xx = 0
end

function request()
  local r = requests[index]
  index = index + nthreads
  if index > #requests then index = (index - 1) % nthreads + 1 end
  sent = sent + 1
  return r
end

function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
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
