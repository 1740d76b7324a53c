-- A sandbox's egress policy (JSON, MIOSA's network-policy shape; NULL:
-- everything the host's fixed rules leave) and when it last changed.
ALTER TABLE sandboxes ADD COLUMN egress_policy TEXT;
ALTER TABLE sandboxes ADD COLUMN egress_policy_updated_at BIGINT;
