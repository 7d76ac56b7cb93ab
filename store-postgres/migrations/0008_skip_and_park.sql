-- An operator can skip a halted subscription's failing event into its dead letters
-- (`skip`): the halt keeps how many attempts the event took, for the letter.
ALTER TABLE checkpoints ADD COLUMN halted_attempts integer;

-- A dead letter can park the later events of its stream behind it whatever the
-- subscription's failure policy (a skipped event with `--park-stream`); a subscription
-- whose policy is `Park` parks behind every letter, as before.
ALTER TABLE dead_letters ADD COLUMN parks_stream boolean NOT NULL DEFAULT false;
