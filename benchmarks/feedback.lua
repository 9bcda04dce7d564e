-- wrk script for bench_feedback.py: every request a distinct /feedback event (its own event_id
-- and timestamp), users and items cycled from the arguments; prints one JSON line at the end.
--   wrk -t2 -c32 -d20s -s benchmarks/feedback.lua URL -- RUN USERS ITEMS
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function split(s)
  local out = {}
  for v in string.gmatch(s, "[^,]+") do table.insert(out, tonumber(v)) end
  return out
end

function init(args)
  run, users, items, n = args[1], split(args[2]), split(args[3]), 0
end

function request()
  n = n + 1
  local k = n * 16 + tid
  local body = string.format(
    '{"user_id":%d,"item_id":%d,"event_type":"view","event_id":"%s-%d-%d",' ..
    '"timestamp":"%s"}', users[k % #users + 1], items[k % #items + 1], run, tid, n,
    os.date("!%Y-%m-%dT%H:%M:%SZ", 1780000000 + k))
  return wrk.format("POST", "/feedback", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"completed":%d,"non_2xx":%d,"socket_errors":%d,"duration_us":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
