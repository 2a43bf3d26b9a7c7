-- Callback requests: a transfer failed (the advisors' queue closed or unreachable) and the
-- caller asked to be called back. Advisors work through the open ones and mark them done.
CREATE TABLE callbacks (
    id         TEXT PRIMARY KEY,         -- "<call id>/<call clock ms>": one per request
    call_id    TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    day        TEXT NOT NULL,            -- local date, for counts per day
    number     TEXT NOT NULL,            -- ten French digits
    source     TEXT NOT NULL,            -- caller_id | keypad
    reason     TEXT NOT NULL,            -- why the transfer failed ("486 Busy Here", "timeout")
    intent     TEXT,                     -- what the caller wanted an advisor for
    siren      TEXT,
    summary    TEXT,                     -- the advisor's one line, as for a transfer
    status     TEXT NOT NULL DEFAULT 'open',   -- open | done
    done_at    DOUBLE PRECISION,
    done_by    TEXT
);
CREATE INDEX callbacks_status ON callbacks (status, at);
CREATE INDEX callbacks_call ON callbacks (call_id);
