CREATE OR REPLACE FUNCTION tokenledger_post_entry_v3(
    p_sender varchar, p_receiver varchar, p_amount bigint, p_reason varchar,
    p_reference_type varchar, p_reference_id varchar, p_memo text, p_key varchar,
    OUT entry_id bigint, OUT entry_time timestamptz, OUT after_from bigint,
    OUT after_to bigint, OUT prior_id bigint, OUT locked json
)
LANGUAGE plpgsql AS $$
DECLARE
    max_units constant bigint := 9223372036854775807;
    sender_real constant boolean :=
        p_sender <> 'system' AND left(p_sender, 7) <> 'system:';
    receiver_real constant boolean :=
        p_receiver <> 'system' AND left(p_receiver, 7) <> 'system:';
    parties constant int := sender_real::int + receiver_real::int;
    acct record;
    found_rows int := 0;
    acceptable boolean := true;
    latest timestamptz := '-infinity';
    sender_row record;
    receiver_row record;
    writer bigint;
BEGIN
    IF p_key IS NOT NULL THEN
        SELECT id INTO prior_id FROM token_ledger WHERE idempotency_key = p_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    -- Every writer locks its accounts in id order: no two can deadlock.
    FOR acct IN
        SELECT account_id, balance, total_earned, total_spent, total_staked, updated_at
        FROM token_accounts
        WHERE account_id IN (p_sender, p_receiver)
        ORDER BY account_id
        FOR UPDATE
    LOOP
        found_rows := found_rows + 1;
        latest := greatest(latest, acct.updated_at);
        IF acct.account_id = p_sender THEN
            sender_row := acct;
            acceptable := acceptable AND acct.balance >= p_amount
                AND acct.total_spent <= max_units - p_amount;
        ELSE
            receiver_row := acct;
            acceptable := acceptable AND acct.balance <= max_units - p_amount
                AND acct.total_earned <= max_units - p_amount;
        END IF;
    END LOOP;
    IF found_rows <> parties OR NOT acceptable THEN
        SELECT json_agg(json_build_array(
            account_id, balance, total_earned, total_spent, total_staked, updated_at))
        INTO locked
        FROM token_accounts WHERE account_id IN (p_sender, p_receiver);
        RETURN;
    END IF;
    -- Never earlier than an account's last change: its entries stay in order.
    entry_time := greatest(clock_timestamp(), latest);
    entry_id := nextval('token_ledger_id_seq'::regclass);
    writer := txid_current();
    -- New figures are absolute, computed from the locked rows.
    IF sender_real THEN
        after_from := sender_row.balance - p_amount;
        UPDATE token_accounts
        SET balance = after_from, total_spent = sender_row.total_spent + p_amount,
            updated_at = entry_time
        WHERE account_id = p_sender;
    END IF;
    IF receiver_real THEN
        after_to := receiver_row.balance + p_amount;
        UPDATE token_accounts
        SET balance = after_to, total_earned = receiver_row.total_earned + p_amount,
            updated_at = entry_time
        WHERE account_id = p_receiver;
    END IF;
    -- The digest is written by the same statement: tamper-evident from the commit.
    INSERT INTO token_ledger (
        id, timestamp, from_account, to_account, amount, reason, reference_type,
        reference_id, memo, balance_after_from, balance_after_to, idempotency_key,
        writer_txid, digest
    )
    VALUES (
        entry_id, entry_time, p_sender, p_receiver, p_amount, p_reason, p_reference_type,
        p_reference_id, p_memo, after_from, after_to, p_key, writer,
        tokenledger_entry_digest_v2_flat(
            entry_id, entry_time, p_sender, p_receiver, p_amount, p_reason, p_reference_type,
            p_reference_id, p_memo, after_from, after_to, p_key, NULL, NULL, writer)
    );
END
$$
