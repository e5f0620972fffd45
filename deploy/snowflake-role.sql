-- Least-privilege Snowflake roles for event-loader (see README, "Deploying on Kubernetes").
--
-- LOADER: the role of the loader's Snowflake user (LOADER_SNOWFLAKE__ROLE). It
-- creates and evolves the event tables, file formats, stages and pipes in one
-- schema (`loader pipes apply`) and loads them (`loader pipes run`). It owns
-- what it creates, because ALTER TABLE ... ADD COLUMN (schema evolution) and
-- CREATE OR REPLACE PIPE need ownership; it owns nothing else.
-- ANALYST: read-only access to the loaded tables.
--
-- Replace the names to match your specs (snowflake.database / snowflake.schema)
-- and settings: ANALYTICS, EVENTS, LOAD_WH, QUERY_WH, S3_EVENTS, the users, the
-- role ARN and the S3 locations (one per spec: s3://<bucket>/<prefix>/data/).
-- The loader's user logs in with a key pair (step 5): only its public key appears here;
-- the private key goes only into the loader's Secret (deploy/helm/event-loader/values.yaml).

-- 1. The storage integration: Snowflake reads the data prefixes through an IAM
--    role (deploy/iam-policy-snowflake.json, trust: iam-policy-snowflake-trust.json).
--    DESC INTEGRATION S3_EVENTS shows the IAM user and external id for the trust policy.
USE ROLE ACCOUNTADMIN;

CREATE STORAGE INTEGRATION IF NOT EXISTS S3_EVENTS
  TYPE = EXTERNAL_STAGE
  STORAGE_PROVIDER = 'S3'
  ENABLED = TRUE
  STORAGE_AWS_ROLE_ARN = 'arn:aws:iam::<ACCOUNT_ID>:role/event-loader-snowflake'
  STORAGE_ALLOWED_LOCATIONS = (
    's3://delivery-events/events/app_click/data/',
    's3://delivery-events/events/order_created/data/',
    's3://delivery-events/events/store_updated/data/'
  );

-- 2. The roles, under SYSADMIN so administrators keep control of what they create.
USE ROLE SECURITYADMIN;

CREATE ROLE IF NOT EXISTS LOADER COMMENT = 'event-loader: creates and loads the event tables';
CREATE ROLE IF NOT EXISTS ANALYST COMMENT = 'Read-only access to the event tables';
GRANT ROLE LOADER TO ROLE SYSADMIN;
GRANT ROLE ANALYST TO ROLE SYSADMIN;

-- 3. LOADER: a warehouse to run COPY on, the one schema, and the integration its stages use.
GRANT USAGE ON WAREHOUSE LOAD_WH TO ROLE LOADER;
GRANT USAGE ON DATABASE ANALYTICS TO ROLE LOADER;
GRANT USAGE ON SCHEMA ANALYTICS.EVENTS TO ROLE LOADER;
GRANT CREATE TABLE, CREATE STAGE, CREATE FILE FORMAT, CREATE PIPE ON SCHEMA ANALYTICS.EVENTS TO ROLE LOADER;
GRANT USAGE ON INTEGRATION S3_EVENTS TO ROLE LOADER;
-- Tables created before the loader took over (LOADER owns the ones it creates).
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA ANALYTICS.EVENTS TO ROLE LOADER;
GRANT SELECT, INSERT ON FUTURE TABLES IN SCHEMA ANALYTICS.EVENTS TO ROLE LOADER;

-- 4. ANALYST: query the tables, nothing else (no stages, no pipes, no writes).
GRANT USAGE ON WAREHOUSE QUERY_WH TO ROLE ANALYST;
GRANT USAGE ON DATABASE ANALYTICS TO ROLE ANALYST;
GRANT USAGE ON SCHEMA ANALYTICS.EVENTS TO ROLE ANALYST;
GRANT SELECT ON ALL TABLES IN SCHEMA ANALYTICS.EVENTS TO ROLE ANALYST;
GRANT SELECT ON FUTURE TABLES IN SCHEMA ANALYTICS.EVENTS TO ROLE ANALYST;

-- 5. The users (created beforehand), and the loader's key-pair login. Snowflake is phasing
--    out passwords for service users. Make the key pair (PKCS#8, the private key encrypted
--    with a passphrase openssl asks for) on the machine that fills the loader's Secret:
--
--      openssl genrsa 2048 | openssl pkcs8 -topk8 -v2 aes-256-cbc -inform PEM -out rsa_key.p8
--      openssl rsa -in rsa_key.p8 -pubout -out rsa_key.pub
--
--    rsa_key.p8 and its passphrase go into the loader's Secret (LOADER_SNOWFLAKE__PRIVATE_KEY
--    and LOADER_SNOWFLAKE__PRIVATE_KEY_PASSPHRASE, see deploy/helm/event-loader/values.yaml);
--    the public key, rsa_key.pub without its BEGIN/END lines, goes below. TYPE = SERVICE
--    leaves the user no password or SSO login at all (a password login needs
--    TYPE = LEGACY_SERVICE, which Snowflake is retiring).
GRANT ROLE LOADER TO USER LOADER;
ALTER USER LOADER SET DEFAULT_ROLE = LOADER DEFAULT_WAREHOUSE = LOAD_WH;
ALTER USER LOADER UNSET PASSWORD;
ALTER USER LOADER SET TYPE = SERVICE;
ALTER USER LOADER SET RSA_PUBLIC_KEY = 'MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA...';
-- Check: DESC USER LOADER shows RSA_PUBLIC_KEY_FP, which must equal SHA256: and the output of
--   openssl rsa -pubin -in rsa_key.pub -outform DER | openssl dgst -sha256 -binary | openssl enc -base64
-- Rotation without downtime: set the new public key as RSA_PUBLIC_KEY_2, roll the Secret and
-- the loader, then ALTER USER LOADER UNSET RSA_PUBLIC_KEY.
