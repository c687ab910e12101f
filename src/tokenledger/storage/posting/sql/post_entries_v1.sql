CREATE OR REPLACE FUNCTION tokenledger_post_entries_v1(
    p_senders varchar[], p_receivers varchar[], p_amounts bigint[], p_reasons varchar[],
    p_reference_types varchar[], p_reference_ids varchar[], p_memos text[], p_keys varchar[]
)
RETURNS TABLE (
    entry_id bigint, entry_time timestamptz, after_from bigint, after_to bigint,
    prior_id bigint, locked json
)
LANGUAGE plpgsql AS $$
-- Several one-entry writes in one statement and one commit (group commit).
-- Every account of the group is locked first, in id order, so that groups
-- cannot deadlock each other whatever order their entries come in; then
-- each entry is posted by the one-entry function, on its own: a refused
-- entry writes nothing and does not stop the others, and a key used earlier
-- in the group reads as used. One row per entry, in the order given.
BEGIN
    PERFORM 1 FROM token_accounts
    WHERE account_id IN (SELECT unnest(p_senders) UNION SELECT unnest(p_receivers))
    ORDER BY account_id
    FOR UPDATE;
    FOR i IN 1 .. cardinality(p_senders) LOOP
        SELECT r.entry_id, r.entry_time, r.after_from, r.after_to, r.prior_id, r.locked
        INTO entry_id, entry_time, after_from, after_to, prior_id, locked
        FROM tokenledger_post_entry_v3(
            p_senders[i], p_receivers[i], p_amounts[i], p_reasons[i], p_reference_types[i],
            p_reference_ids[i], p_memos[i], p_keys[i]) AS r;
        RETURN NEXT;
    END LOOP;
END
$$;
