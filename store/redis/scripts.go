package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts behind every write (and the multi-key reads). A script
// runs atomically: no other command sees it half done. Each one checks
// everything that can fail (existence, duplicates) before its first write,
// so a refused call writes nothing. Configuration writes increment the
// generation and publish on the events channel in the same script; runtime
// writes do neither, except credential states, which publish.
//
// Result codes of the writes: 0 done, 1 duplicate, 2 not found.
const (
	resOK        = 0
	resDuplicate = 1
	resNotFound  = 2
)

// credCreate: KEYS cred:<id>, creds, credidx, gen.
// ARGV id, index entry (folded email NUL cloud id), channel, field/value...
var credCreate = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
	return 1
end
redis.call('HSET', KEYS[1], 'idx', ARGV[2], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[3], 'config')
return 0
`)

// credUpdate: KEYS cred:<id>, creds, credidx, gen.
// ARGV id, new index entry, channel, field/value... (created_at is not
// among the fields: it is kept).
var credUpdate = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return 2
end
local old = redis.call('HGET', KEYS[1], 'idx')
if old ~= ARGV[2] then
	local owner = redis.call('HGET', KEYS[3], ARGV[2])
	if owner and owner ~= ARGV[1] then
		return 1
	end
	if old and redis.call('HGET', KEYS[3], old) == ARGV[1] then
		redis.call('HDEL', KEYS[3], old)
	end
	redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
end
redis.call('HSET', KEYS[1], 'idx', ARGV[2], unpack(ARGV, 4))
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[3], 'config')
return 0
`)

// credDelete: KEYS cred:<id>, creds, credidx, gen, state:<id>, states.
// ARGV id, channel.
var credDelete = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return 2
end
local idx = redis.call('HGET', KEYS[1], 'idx')
if idx and redis.call('HGET', KEYS[3], idx) == ARGV[1] then
	redis.call('HDEL', KEYS[3], idx)
end
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[2], 'config')
return 0
`)

// listRecords returns id, fields, id, fields... for every member of a set
// whose hash exists: the whole list in one consistent read.
// KEYS set. ARGV prefix of the record keys.
var listRecords = goredis.NewScript(`
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
	local h = redis.call('HGETALL', ARGV[1] .. id)
	if #h > 0 then
		out[#out + 1] = id
		out[#out + 1] = h
	end
end
return out
`)

// stateSet: KEYS cred:<id>, state:<id>, states.
// ARGV id, channel, expiry (Unix ms, "" for none), field/value...
var stateSet = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return 2
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then
	redis.call('PEXPIREAT', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[2], 'state')
return 0
`)

// stateClear: KEYS state:<id>, states. ARGV id, channel.
var stateClear = goredis.NewScript(`
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if n > 0 then
	redis.call('PUBLISH', ARGV[2], 'state')
end
return 0
`)

// tokCreate: KEYS tok:<id>, toks, tokhash, gen.
// ARGV id, hash, channel, field/value...
var tokCreate = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
	return 1
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[3], 'config')
return 0
`)

// tokUpdate: KEYS tok:<id>, gen. ARGV channel, field/value...
var tokUpdate = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return 2
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], 'config')
return 0
`)

// tokDelete: KEYS tok:<id>, toks, tokhash, gen. ARGV id, channel.
var tokDelete = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return 2
end
local h = redis.call('HGET', KEYS[1], 'hash')
if h and redis.call('HGET', KEYS[3], h) == ARGV[1] then
	redis.call('HDEL', KEYS[3], h)
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', ARGV[2], 'config')
return 0
`)

// tokTouch sets the last use of the tokens that exist.
// KEYS tok:<id>... ARGV the times, one per key.
var tokTouch = goredis.NewScript(`
for i, k in ipairs(KEYS) do
	if redis.call('EXISTS', k) == 1 then
		redis.call('HSET', k, 'used', ARGV[i])
	end
end
return 0
`)

// adminInit: KEYS admin, gen. ARGV channel, field/value...
// Returns 1 when it set the password, 0 when one existed.
var adminInit = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
	return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], 'config')
return 1
`)

// adminSet: KEYS admin, gen. ARGV channel, field/value...
var adminSet = goredis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], 'config')
return 0
`)

// Sessions are hashes indexed by the sorted set "sessions", whose members
// (all of score 0, so ordered as bytes) are the sortable last-seen time
// (sortLen characters) followed by the id.

// sessCreate: KEYS sess:<id>, sessions. ARGV member, field/value...
var sessCreate = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
	return 1
end
redis.call('HSET', KEYS[1], 'm', ARGV[1], unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 0
`)

// sessTouch: KEYS sess:<id>, sessions. ARGV member, last seen.
var sessTouch = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return 2
end
local old = redis.call('HGET', KEYS[1], 'm')
if old then
	redis.call('ZREM', KEYS[2], old)
end
redis.call('HSET', KEYS[1], 'm', ARGV[1], 'seen', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 0
`)

// sessDelete: KEYS sess:<id>, sessions.
var sessDelete = goredis.NewScript(`
local old = redis.call('HGET', KEYS[1], 'm')
if old then
	redis.call('ZREM', KEYS[2], old)
end
redis.call('DEL', KEYS[1])
return 0
`)

// sessDeleteRange deletes the sessions whose index member is in a
// ZRANGEBYLEX range and returns how many. KEYS sessions.
// ARGV prefix of the session keys, length of the time part, min, max.
var sessDeleteRange = goredis.NewScript(`
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[3], ARGV[4])
local skip = tonumber(ARGV[2])
for _, m in ipairs(members) do
	redis.call('DEL', ARGV[1] .. string.sub(m, skip + 1))
end
if #members > 0 then
	redis.call('ZREMRANGEBYLEX', KEYS[1], ARGV[3], ARGV[4])
end
return #members
`)

// usageAdd adds a batch of rows. KEYS usagedays, usage:<day>...
// ARGV prefix of the day keys, TTL (s), number of days n, the n days (in
// the order of KEYS[2..]), then per row: day number (1..n), field, and
// the four increments. It also drops from the index up to two of the
// oldest days whose counters have expired.
var usageAdd = goredis.NewScript(`
local n = tonumber(ARGV[3])
local i = 4 + n
while i <= #ARGV do
	local k = KEYS[1 + tonumber(ARGV[i])]
	local f = ARGV[i + 1]
	redis.call('HINCRBY', k, 'r' .. f, ARGV[i + 2])
	redis.call('HINCRBY', k, 'f' .. f, ARGV[i + 3])
	redis.call('HINCRBY', k, 'i' .. f, ARGV[i + 4])
	redis.call('HINCRBY', k, 'o' .. f, ARGV[i + 5])
	i = i + 6
end
for j = 1, n do
	redis.call('EXPIRE', KEYS[1 + j], ARGV[2])
	redis.call('ZADD', KEYS[1], 0, ARGV[3 + j])
end
for _, d in ipairs(redis.call('ZRANGE', KEYS[1], 0, 1)) do
	if redis.call('EXISTS', ARGV[1] .. d) == 0 then
		redis.call('ZREM', KEYS[1], d)
	end
end
return 0
`)

// usageList returns day, fields, day, fields... for the days in a range.
// KEYS usagedays. ARGV prefix of the day keys, min, max (ZRANGEBYLEX).
var usageList = goredis.NewScript(`
local out = {}
for _, d in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])) do
	local h = redis.call('HGETALL', ARGV[1] .. d)
	if #h > 0 then
		out[#out + 1] = d
		out[#out + 1] = h
	end
end
return out
`)

// markerCheck reads the marker, setting it to ARGV[1] when absent, and
// records a data loss when the caller had seen another value. Returns
// {marker, the loss record's fields and values (empty: none)}.
// KEYS marker, lost. ARGV new marker value, the value the caller saw last
// ("" for none), at (ns), by, reason, channel.
var markerCheck = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
	redis.call('SET', KEYS[1], ARGV[1])
	v = ARGV[1]
end
if ARGV[2] ~= '' and v ~= ARGV[2] and redis.call('EXISTS', KEYS[2]) == 0 then
	redis.call('HSET', KEYS[2], 'at', ARGV[3], 'by', ARGV[4], 'reason', ARGV[5])
	redis.call('PUBLISH', ARGV[6], 'lost')
end
return {v, redis.call('HGETALL', KEYS[2])}
`)

// lossClear deletes the loss record and returns its fields and values
// (empty: there was none), publishing a notice when it deleted one.
// KEYS lost. ARGV channel.
var lossClear = goredis.NewScript(`
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then
	return {}
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], 'lost')
return rec
`)
