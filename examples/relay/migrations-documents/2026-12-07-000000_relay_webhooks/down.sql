DROP TRIGGER relay_webhook_left ON awareness_entries;
DROP TRIGGER relay_webhook_flipped ON awareness_entries;
DROP TRIGGER relay_webhook_joined ON awareness_entries;
DROP FUNCTION relay_webhook_record();
DROP TABLE relay_webhook_deliveries;
DROP TABLE relay_webhook_endpoints;
