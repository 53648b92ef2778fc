-- wrk script for benches/tlsrpt.sh: POSTs TLSRPT_PER_THREAD distinct reports per thread.
-- Each body is the template file (TLSRPT_TEMPLATE) with @ID@ replaced by a report-id unique
-- per run (TLSRPT_RUN), thread and request. Responses are classified by their body, so only
-- answers to our POSTs count. Once a thread has sent its share it sends only a cheap policy GET
-- per connection and second (wrk cannot idle a connection) and stops as soon as every POST has
-- been answered: no report is in flight when wrk ends, so stored == 2xx can be checked exactly.
-- wrk's own duration is always the full -d (the main thread sleeps it out even when every
-- thread has stopped), so each thread records wall-clock time of its first request and of its
-- last answer itself (LuaJIT FFI, microseconds).
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_usec; } bench_timeval;
  int gettimeofday(bench_timeval *tv, void *tz);
]]
local function now_us()
  local tv = ffi.new("bench_timeval")
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local template
local limit
local run
local post_headers = { ["Content-Type"] = "application/tlsrpt+json" }

function init(args)
  local f = assert(io.open(os.getenv("TLSRPT_TEMPLATE"), "rb"))
  template = f:read("*a")
  f:close()
  limit = tonumber(os.getenv("TLSRPT_PER_THREAD"))
  run = os.getenv("TLSRPT_RUN")
  sent, created, duplicate, failed = 0, 0, 0, 0
  first_us, last_us = 0, 0
  -- wrk 4.1 calls request() once in thread 0's Lua state to count the pipeline depth
  -- (script_verify_request) and never sends that request: do not spend a report-id on it.
  verify_call = (tid == 0)
end

function delay()
  if sent >= limit then return 1000 end
  return 0
end

function request()
  if verify_call or sent >= limit then
    verify_call = false
    return wrk.format("GET", "/.well-known/mta-sts.txt", {})
  end
  if sent == 0 then first_us = now_us() end
  sent = sent + 1
  local id = string.format("%s-%d-%d", run, tid, sent)
  local body = string.gsub(template, "@ID@", id, 1)
  return wrk.format("POST", "/tlsrpt", post_headers, body)
end

function response(status, headers, body)
  if body == "report stored\n" and status == 201 then
    created = created + 1
  elseif body == "report already stored\n" and status == 200 then
    duplicate = duplicate + 1
  elseif status == 200 and string.sub(body, 1, 13) == "version: STSv" then
    return -- filler GET
  else
    failed = failed + 1
    if failed <= 3 then io.stderr:write(string.format("tlsrpt: status %d: %s", status, body)) end
  end
  if created + duplicate + failed >= limit then
    last_us = now_us()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local s, c, d, f = 0, 0, 0, 0
  local first, last = math.huge, 0
  for _, t in ipairs(threads) do
    s = s + t:get("sent"); c = c + t:get("created")
    d = d + t:get("duplicate"); f = f + t:get("failed")
    local t0, t1 = t:get("first_us"), t:get("last_us")
    if t0 > 0 and t0 < first then first = t0 end
    if t1 == 0 then last = math.huge elseif t1 > last then last = t1 end
  end
  -- an unfinished thread makes the elapsed time invalid: report 0
  local elapsed = (last == math.huge or first == math.huge) and 0 or (last - first)
  local e = summary.errors
  io.write(string.format(
    "tlsrpt: sent=%d created=%d duplicate=%d failed=%d elapsed_us=%d socket_errors=%d\n",
    s, c, d, f, elapsed, e.connect + e.read + e.write + e.timeout))
end
