CREATE OR REPLACE FUNCTION tokenledger_entry_digest_v2_flat(
    p_id bigint, p_timestamp timestamptz, p_from_account varchar, p_to_account varchar,
    p_amount bigint, p_reason varchar, p_reference_type varchar, p_reference_id varchar,
    p_memo text, p_balance_after_from bigint, p_balance_after_to bigint,
    p_idempotency_key varchar, p_stake_id bigint, p_reverses_entry_id bigint,
    p_writer_txid bigint
) RETURNS varchar
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- The digest of tokenledger_entry_digest_v2 (encoding version 2), as one
    -- expression: the planner inlines it into the statement that calls it.
    -- _v2 calls a helper per field, which the planner cannot inline (it uses
    -- its argument twice), and those calls cost more than the hashing.
    -- Each field: '-' when NULL, else its length in bytes, ':' and its text.
    SELECT encode(sha256(convert_to(
        'tokenledger/entry/v2' || chr(10)
        || CASE WHEN p_id IS NULL THEN '-'
                ELSE octet_length(p_id::text) || ':' || p_id::text END
        || CASE WHEN p_timestamp IS NULL THEN '-'
                ELSE octet_length(to_char(p_timestamp AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                     || ':' || to_char(p_timestamp AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END
        || CASE WHEN p_from_account IS NULL THEN '-'
                ELSE octet_length(p_from_account) || ':' || p_from_account END
        || CASE WHEN p_to_account IS NULL THEN '-'
                ELSE octet_length(p_to_account) || ':' || p_to_account END
        || CASE WHEN p_amount IS NULL THEN '-'
                ELSE octet_length(p_amount::text) || ':' || p_amount::text END
        || CASE WHEN p_reason IS NULL THEN '-'
                ELSE octet_length(p_reason) || ':' || p_reason END
        || CASE WHEN p_reference_type IS NULL THEN '-'
                ELSE octet_length(p_reference_type) || ':' || p_reference_type END
        || CASE WHEN p_reference_id IS NULL THEN '-'
                ELSE octet_length(p_reference_id) || ':' || p_reference_id END
        || CASE WHEN p_memo IS NULL THEN '-'
                ELSE octet_length(p_memo) || ':' || p_memo END
        || CASE WHEN p_balance_after_from IS NULL THEN '-'
                ELSE octet_length(p_balance_after_from::text) || ':' || p_balance_after_from::text END
        || CASE WHEN p_balance_after_to IS NULL THEN '-'
                ELSE octet_length(p_balance_after_to::text) || ':' || p_balance_after_to::text END
        || CASE WHEN p_idempotency_key IS NULL THEN '-'
                ELSE octet_length(p_idempotency_key) || ':' || p_idempotency_key END
        || CASE WHEN p_stake_id IS NULL THEN '-'
                ELSE octet_length(p_stake_id::text) || ':' || p_stake_id::text END
        || CASE WHEN p_reverses_entry_id IS NULL THEN '-'
                ELSE octet_length(p_reverses_entry_id::text) || ':' || p_reverses_entry_id::text END
        || CASE WHEN p_writer_txid IS NULL THEN '-'
                ELSE octet_length(p_writer_txid::text) || ':' || p_writer_txid::text END,
        'UTF8')), 'hex')
$$;
