ALTER TABLE appointments ALTER COLUMN id SET DEFAULT gen_random_uuid();
DROP FUNCTION IF EXISTS appt_uuid_v7();
