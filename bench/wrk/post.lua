-- wrk script for bench/run: POST the body in $BENCH_BODY_FILE as an OpenAI chat completion, with the
-- gateway's master key. The request is static (wrk builds it once), so wrk's own cost stays minimal.
-- $BENCH_STOP_AFTER (optional): stop after that many responses (memory check; use with -t1).
-- done() prints one machine-readable line: BENCH {json}.

local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_MASTER_KEY") or "none")

local limit = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
if limit > 0 then
  local n = 0
  function response(status, headers, body)
    n = n + 1
    if n >= limit then
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_mean_us":%.1f,' ..
    '"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.mean, latency.max))
end
