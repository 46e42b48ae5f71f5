-- Time-ordered appointment ids (UUID version 7, RFC 9562 §5.7): 48 bits of Unix milliseconds, then random bits.
-- New ids land at the right edge of appointments_pkey and of every index keyed by appointment id
-- (appointment_status_changes), so a bulk write touches a few hot pages instead of one random page per row, and
-- the foreign-key check of each status-change row finds its appointment in cache. gen_random_uuid() ids stay
-- valid; PostgreSQL 18's uuidv7() computes the same layout.
CREATE FUNCTION appt_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
ALTER TABLE appointments ALTER COLUMN id SET DEFAULT appt_uuid_v7();
