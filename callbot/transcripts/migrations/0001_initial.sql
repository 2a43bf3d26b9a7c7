-- Calls and their turns. Times are seconds since the epoch (UTC); "day" is the call's local
-- date, so the dashboard can count calls per day with a plain GROUP BY on any database.
CREATE TABLE calls (
    id              TEXT PRIMARY KEY,
    sip_call_id     TEXT,
    started_at      DOUBLE PRECISION NOT NULL,
    day             TEXT NOT NULL,
    ended_at        DOUBLE PRECISION,
    caller_number   TEXT,
    worker          TEXT,
    outcome         TEXT,              -- NULL while the call is going on
    detail          TEXT,              -- hang-up reason, error message
    transfer_reason TEXT,
    transfer_target TEXT,
    transfer_result TEXT,
    summary         TEXT,              -- the advisor's one-line summary of a transfer
    duration_ms     INTEGER,
    caller_turns    INTEGER NOT NULL DEFAULT 0,
    answers         INTEGER NOT NULL DEFAULT 0,
    recording       TEXT               -- WAV path relative to the recordings folder
);
CREATE INDEX calls_started_at ON calls (started_at);
CREATE INDEX calls_day ON calls (day);
CREATE INDEX calls_outcome ON calls (outcome);
CREATE INDEX calls_open ON calls (worker, outcome);

CREATE TABLE turns (
    call_id         TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    at              DOUBLE PRECISION NOT NULL,
    offset_ms       INTEGER,           -- call clock when the turn happened
    speaker         TEXT NOT NULL,     -- caller | bot
    kind            TEXT NOT NULL,     -- speech | dtmf | silence | say
    text            TEXT,
    asr_engine      TEXT,
    asr_confidence  DOUBLE PRECISION,
    intent          TEXT,
    confidence      DOUBLE PRECISION,
    decision        TEXT,              -- confident | confirm | reject | capture
    alternatives    TEXT,              -- JSON [[intent, probability], ...]
    answer_id       TEXT,              -- the first Say key: answer:<intent>, prompt:<name>...
    events          TEXT,              -- JSON of every event of the bot's turn
    latency_ms      DOUBLE PRECISION,  -- final transcript -> first answer frame queued
    decode_ms       DOUBLE PRECISION,
    barge_in_ms     INTEGER,           -- the caller cut the bot after this much playback
    dtmf            TEXT,
    state           TEXT,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX turns_at ON turns (at);
CREATE INDEX turns_intent ON turns (intent);
