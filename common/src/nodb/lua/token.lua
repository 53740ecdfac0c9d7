-- The token of a stored lock payload: the JSON `token` field, or the raw value
-- (legacy payloads were bare tokens).
local function stored_token(raw)
  local ok, obj = pcall(cjson.decode, raw)
  if ok and type(obj) == 'table' then
    return obj.token or raw, obj.owner
  end
  return raw, nil
end
