CREATE OR REPLACE FUNCTION tokenledger_digest_field(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_text IS NULL THEN '-' ELSE octet_length(p_text) || ':' || p_text END
$$;

CREATE OR REPLACE FUNCTION tokenledger_digest_time(p_moment timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(p_moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION tokenledger_entry_digest_v2(
    p_id bigint, p_timestamp timestamptz, p_from_account varchar, p_to_account varchar,
    p_amount bigint, p_reason varchar, p_reference_type varchar, p_reference_id varchar,
    p_memo text, p_balance_after_from bigint, p_balance_after_to bigint,
    p_idempotency_key varchar, p_stake_id bigint, p_reverses_entry_id bigint,
    p_writer_txid bigint
) RETURNS varchar
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(
        'tokenledger/entry/v2' || chr(10)
        || tokenledger_digest_field(p_id::text)
        || tokenledger_digest_field(tokenledger_digest_time(p_timestamp))
        || tokenledger_digest_field(p_from_account)
        || tokenledger_digest_field(p_to_account)
        || tokenledger_digest_field(p_amount::text)
        || tokenledger_digest_field(p_reason)
        || tokenledger_digest_field(p_reference_type)
        || tokenledger_digest_field(p_reference_id)
        || tokenledger_digest_field(p_memo)
        || tokenledger_digest_field(p_balance_after_from::text)
        || tokenledger_digest_field(p_balance_after_to::text)
        || tokenledger_digest_field(p_idempotency_key)
        || tokenledger_digest_field(p_stake_id::text)
        || tokenledger_digest_field(p_reverses_entry_id::text)
        || tokenledger_digest_field(p_writer_txid::text),
        'UTF8')), 'hex')
$$;

CREATE OR REPLACE FUNCTION tokenledger_stake_digest_v1(
    p_id bigint, p_account_id varchar, p_amount bigint, p_status varchar, p_reason varchar,
    p_reference_type varchar, p_reference_id varchar, p_memo text,
    p_expires_at timestamptz, p_created_at timestamptz, p_closed_at timestamptz
) RETURNS varchar
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(
        'tokenledger/stake/v1' || chr(10)
        || tokenledger_digest_field(p_id::text)
        || tokenledger_digest_field(p_account_id)
        || tokenledger_digest_field(p_amount::text)
        || tokenledger_digest_field(p_status)
        || tokenledger_digest_field(p_reason)
        || tokenledger_digest_field(p_reference_type)
        || tokenledger_digest_field(p_reference_id)
        || tokenledger_digest_field(p_memo)
        || tokenledger_digest_field(tokenledger_digest_time(p_expires_at))
        || tokenledger_digest_field(tokenledger_digest_time(p_created_at))
        || tokenledger_digest_field(tokenledger_digest_time(p_closed_at)),
        'UTF8')), 'hex')
$$;

-- A writer that does not compute the digest itself (an older release during a
-- rolling deploy, a hand-written INSERT) still gets one: the trigger only runs
-- when the digest is missing, so the writers that compute it pay nothing.
CREATE OR REPLACE FUNCTION tokenledger_fill_entry_digest() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.digest := tokenledger_entry_digest_v2(
        NEW.id, NEW.timestamp, NEW.from_account, NEW.to_account, NEW.amount, NEW.reason,
        NEW.reference_type, NEW.reference_id, NEW.memo, NEW.balance_after_from,
        NEW.balance_after_to, NEW.idempotency_key, NEW.stake_id, NEW.reverses_entry_id,
        NEW.writer_txid);
    RETURN NEW;
END
$$;

-- A stake row changes once (when it closes): its digest is rewritten with it.
CREATE OR REPLACE FUNCTION tokenledger_fill_stake_digest() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.digest := tokenledger_stake_digest_v1(
        NEW.id, NEW.account_id, NEW.amount, NEW.status, NEW.reason, NEW.reference_type,
        NEW.reference_id, NEW.memo, NEW.expires_at, NEW.created_at, NEW.closed_at);
    RETURN NEW;
END
$$;
