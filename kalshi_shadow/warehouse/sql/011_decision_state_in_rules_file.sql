-- Whether the running platform's rules file still holds the version: set by every run of the decisions asset, so
-- `kalshi-shadow status` and the health checks tell live, replaying and retired versions apart from the warehouse
-- itself (the platform's KALSHI_SHADOW_RULES), not from whatever environment they are run in.
ALTER TABLE kalshi_decision_state ADD COLUMN IF NOT EXISTS in_rules_file BOOLEAN DEFAULT true;
