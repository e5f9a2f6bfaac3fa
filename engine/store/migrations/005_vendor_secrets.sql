-- Vendor credentials (issue 5, item 5): APNs .p8 keys, FCM service accounts, OEM app secrets, VAPID keys,
-- encrypted under the data key like devices.token. See engine/security/vendor_secrets.py and decision 009.

CREATE TABLE IF NOT EXISTS vendor_secrets (
    vendor      VARCHAR NOT NULL,             -- a [vendors.<name>] section, e.g. 'apns'
    name        VARCHAR NOT NULL,             -- e.g. 'p8'; config refers to it as "secret:apns/p8"
    ciphertext  VARCHAR NOT NULL,             -- "pw1:<key id>:<base64>", associated data "vendor_secrets:<vendor>/<name>"
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (vendor, name)
);
