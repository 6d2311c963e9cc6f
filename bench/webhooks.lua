-- wrk script: each thread sends its own slice of pre-signed, distinct webhook requests.
-- args: <requests file> <thread count>; file lines: id \t timestamp \t signature \t body
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  thread:set("wrapped", 0)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/anthropic", {
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
        ["content-type"] = "application/json",
        ["user-agent"] = "Anthropic-Webhooks/bench",
      }, body)
    end
    i = i + 1
  end
  idx = 0
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wrapped = 1
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, t in ipairs(threads) do
    wrapped = wrapped + t:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"wrapped":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    wrapped, latency:percentile(50), latency:percentile(99)))
end
