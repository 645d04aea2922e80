-- post.lua - wrk script: POST tests/load/doc.xml (~1 KB of XML) with
-- Content-Type application/xml. The URL names the route:
--   wrk -t1 -c100 -d10s -s tests/load/post.lua http://127.0.0.1:8080/ingest
-- DOC=path/to/other.xml overrides the document; HEADER="Name: value" adds
-- one request header (a route that routes on a header). wrk counts every answer
-- other than 2xx/3xx under "Non-2xx or 3xx responses" (503 = broker
-- unavailable or max_inflight reached). report.lua adds one machine-readable
-- line at the end (tests/bench/run.sh reads it).

local function script_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*/)") or "./"
end

dofile(script_dir() .. "report.lua")

local path = os.getenv("DOC") or (script_dir() .. "doc.xml")
local f = assert(io.open(path, "rb"), "cannot open " .. path)
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/xml"
local extra = os.getenv("HEADER")
if extra then
  local name, value = extra:match("^([^:]+):%s*(.*)$")
  assert(name, "HEADER must be 'Name: value'")
  wrk.headers[name] = value
end
