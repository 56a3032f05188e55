-- wrk script for scripts/bench_search.py: POST /search/hybrid with bodies read from a file.
--
--   wrk -t1 -c8 -d10s -s scripts/bench/search_load.lua http://127.0.0.1:8001 -- BODIES_FILE MODE
--
-- BODIES_FILE holds one JSON request body per line. MODE "hit" cycles through them as they are (a warm
-- cache answers every one); MODE "miss" adds a "score_threshold" that is unique per request (a tiny
-- value that drops nothing), so every request is a distinct cache key and runs the whole search path.
-- done() prints one JSON line: requests, seconds, non-2xx, socket errors, responses that said
-- "cached":true, the mean latency in ms and the latency histogram ("hist_us": [[microseconds, requests],
-- ...]) from which the caller computes its percentiles (stack_dev.load.run_wrk).

local bodies = {}
local mode = "hit"
local salt = 0
local counter = 0
cached = 0          -- global: done() reads it from each thread with thread:get
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  local path = args[1]
  mode = args[2] or "hit"
  salt = tonumber(args[3] or "0")
  for line in io.lines(path) do
    if #line > 2 then table.insert(bodies, line) end
  end
  if #bodies == 0 then error("no request bodies in " .. path) end
  counter = thread_no * 100000000
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  if mode == "miss" then
    -- "{...}" -> "{\"score_threshold\":<unique>,...}"
    body = string.format('{"score_threshold":%.15e,', (salt * 1e9 + counter) * 1e-21) .. string.sub(body, 2)
  end
  return wrk.format(nil, "/search/hybrid", nil, body)
end

function response(status, headers, body)
  if status == 200 and string.find(body, '"cached":true', 1, true) then
    cached = cached + 1
  end
end

function done(summary, latency, requests)
  local c = 0
  for _, t in ipairs(threads) do c = c + (t:get("cached") or 0) end
  local e = summary.errors
  -- the latency histogram, [microseconds, requests] per distinct value (wrk's stats API: #latency distinct
  -- values, latency(i) -> value, count): the caller computes the percentiles with stack_dev.stats, the
  -- definition every other script uses
  local hist = {}
  for i = 1, #latency do
    local us, n = latency(i)
    hist[#hist + 1] = string.format("[%d,%d]", us, n)
  end
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"non_2xx":%d,"socket_errors":%d,"cached":%d,"mean":%.3f,"hist_us":[%s]}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout, c,
    latency.mean / 1000, table.concat(hist, ",")))
end
