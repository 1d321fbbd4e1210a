-- The network tables: which autonomous system announces each range
-- (RouteViews and DB-IP data, CC BY 4.0). Like the place tables, ranges
-- never overlap, so one backward probe of start_ip finds an address's row.
-- asn is a 32-bit AS number (RFC 6793), beyond int4's range.

CREATE TABLE ip_service_asn (
    id          bigserial    PRIMARY KEY,
    create_time timestamptz  NOT NULL DEFAULT now(),
    update_time timestamptz  NOT NULL DEFAULT now(),
    start_ip    int8         NOT NULL,
    end_ip      int8         NOT NULL,
    asn         int8         NOT NULL CONSTRAINT ip_service_asn_asn CHECK (asn BETWEEN 0 AND 4294967295),
    as_org      varchar(255) NOT NULL DEFAULT '',
    CONSTRAINT ip_service_asn_range CHECK (0 <= start_ip AND start_ip <= end_ip AND end_ip <= 4294967295)
);
CREATE UNIQUE INDEX ip_service_asn_start_ip ON ip_service_asn (start_ip);

CREATE TABLE ip_service_asn_v6 (
    id          bigserial    PRIMARY KEY,
    create_time timestamptz  NOT NULL DEFAULT now(),
    update_time timestamptz  NOT NULL DEFAULT now(),
    start_ip    inet         NOT NULL,
    end_ip      inet         NOT NULL,
    asn         int8         NOT NULL CONSTRAINT ip_service_asn_v6_asn CHECK (asn BETWEEN 0 AND 4294967295),
    as_org      varchar(255) NOT NULL DEFAULT '',
    CONSTRAINT ip_service_asn_v6_range CHECK (
        family(start_ip) = 6 AND family(end_ip) = 6
        AND masklen(start_ip) = 128 AND masklen(end_ip) = 128
        AND start_ip <= end_ip)
);
CREATE UNIQUE INDEX ip_service_asn_v6_start_ip ON ip_service_asn_v6 (start_ip);

-- The changed rows an import keeps hold a network table's values too; a
-- row fills the columns of its own table and leaves the others empty.
ALTER TABLE ip_service_import_changes
    ALTER COLUMN country_code SET DEFAULT '', ALTER COLUMN country_name SET DEFAULT '',
    ALTER COLUMN province_code SET DEFAULT '', ALTER COLUMN province_name SET DEFAULT '',
    ALTER COLUMN city_code SET DEFAULT '', ALTER COLUMN city_name SET DEFAULT '',
    ALTER COLUMN district_name SET DEFAULT '', ALTER COLUMN carrier_name SET DEFAULT '',
    ADD COLUMN asn int8, ADD COLUMN as_org text;
