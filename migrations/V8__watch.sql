-- The domain watch's state: each watched name's last confirmed
-- observation (and the rounds towards the next), and the history of the
-- changes it confirmed with what became of each route's alert.
CREATE TABLE IF NOT EXISTS watch_names (
    name       text PRIMARY KEY,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS watch_events (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    at         timestamptz NOT NULL,
    change     jsonb NOT NULL,
    -- route name -> "pending" | "sent" | "failed"
    deliveries jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS watch_events_name ON watch_events (name, id DESC);
