-- What the caller waited at the end of a turn before the bot took it (the silence heard
-- after the last voiced frame): with decode_ms and latency_ms, the caller-perceived delay.
ALTER TABLE turns ADD COLUMN endpoint_ms DOUBLE PRECISION;
