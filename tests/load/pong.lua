-- pong.lua - wrk script: GET on the URL, reported by report.lua.
--   wrk -t1 -c100 -d10s -s tests/load/pong.lua http://127.0.0.1:8080/pong
-- CLOSE=1 sends Connection: close, so every request opens a new TCP
-- connection (the classic ping-pong test of connection handling).

local function script_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*/)") or "./"
end

dofile(script_dir() .. "report.lua")

wrk.method = "GET"
if os.getenv("CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end
