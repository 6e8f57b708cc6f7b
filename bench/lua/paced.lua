-- wrk script: fixed-rate open loop, latency measured from the *intended* send time.
--
--   wrk -t16 -c16 -d15s -s paced.lua URL -- PERIOD_US NCONN
--
-- Run with one connection per thread (-t N -c N): wrk's Lua state is per thread, so
-- per-thread state is per-connection state. Each connection sends request i at
-- t0 + i*PERIOD_US (connections phase-shifted by PERIOD_US/NCONN so the aggregate is
-- evenly spaced). A late response delays the next send, and that request's latency is
-- counted from when it *should* have left: the correction for coordinated omission that
-- wrk2 makes. wrk's delay() is in whole milliseconds, so it is rounded *down* and a
-- request that leaves early is timed from its real send time: the generator's own timer
-- granularity is never charged to the system under test.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  period = tonumber(args[1])
  nconn = tonumber(args[2])
  req = wrk.format()
  t0 = nil
  i = 0
  intended = 0
  sent_at = 0
  lat = {}
  n = 0
  bad = 0
end

local function start()
  if t0 == nil then
    t0 = now_us() + 1000 + tid * period / nconn
  end
end

function delay()
  start()
  local d = (t0 + i * period - now_us()) / 1000
  if d <= 0 then return 0 end
  return math.floor(d)
end

function request()
  start()
  intended = t0 + i * period
  sent_at = now_us()
  i = i + 1
  return req
end

function response(status, headers, body)
  local t = now_us()
  n = n + 1
  lat[n] = t - math.min(intended, sent_at)
  if status ~= 200 then bad = bad + 1 end
end

local function pct(sorted, p)
  if #sorted == 0 then return 0 end
  local k = math.ceil(p / 100 * #sorted)
  if k < 1 then k = 1 end
  return sorted[k]
end

function done(summary, latency, requests)
  local all = {}
  local non200 = 0
  for _, t in ipairs(threads) do
    local l = t:get("lat")
    for _, v in ipairs(l) do all[#all + 1] = v end
    non200 = non200 + t:get("bad")
  end
  table.sort(all)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "non200": %d, "errors": %d, ' ..
    '"corrected_us": {"p50": %.1f, "p90": %.1f, "p99": %.1f, "p99.9": %.1f, "max": %.1f, "n": %d}, ' ..
    '"wrk_us": {"p50": %.1f, "p90": %.1f, "p99": %.1f, "p99.9": %.1f, "max": %.1f}}\n',
    summary.requests, summary.duration, non200,
    e.connect + e.read + e.write + e.timeout,
    pct(all, 50), pct(all, 90), pct(all, 99), pct(all, 99.9), all[#all] or 0, #all,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
