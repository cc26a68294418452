-- Each subscription's license: the cache file's entry, one row each, no capacity limit.
-- `seq` keeps the cache file's order (oldest first) for listing and for `migrate-cache`.
CREATE TABLE subscriptions (
    sub_id      text PRIMARY KEY,
    seq         bigserial NOT NULL UNIQUE,
    license_key text NOT NULL,
    interval    text NOT NULL,
    license_id  bigint NOT NULL,
    -- Keys of a cache file's entry this server does not know, kept as they were.
    extra       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per webhook event: what its latest delivery did. `handled`: a later delivery of the
-- event is answered without running its flow again.
CREATE TABLE deliveries (
    event_id        text PRIMARY KEY,
    event_type      text NOT NULL,
    subscription_id text,
    outcome         text NOT NULL,
    error           text,
    handled         boolean NOT NULL,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 1
);
CREATE INDEX deliveries_by_last_seen ON deliveries (last_seen DESC);
CREATE INDEX failed_deliveries_by_last_seen ON deliveries (last_seen DESC) WHERE NOT handled;
