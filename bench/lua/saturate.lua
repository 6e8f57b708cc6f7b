-- wrk script: closed loop as fast as the system answers; only prints a JSON summary line.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, ' ..
    '"wrk_us": {"p50": %.1f, "p90": %.1f, "p99": %.1f, "p99.9": %.1f, "max": %.1f}}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
