DROP INDEX IF EXISTS appointments_confirmed_capacity_idx;
