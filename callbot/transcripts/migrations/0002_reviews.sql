-- What supervisors decided about an utterance of the review queue.
CREATE TABLE reviews (
    call_id  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    action   TEXT NOT NULL,            -- assigned | out_of_scope | dismissed
    intent   TEXT,                     -- the intent it was assigned to
    by_user  TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (call_id, seq)
);
