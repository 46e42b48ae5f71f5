DROP TABLE IF EXISTS booking_requests;
