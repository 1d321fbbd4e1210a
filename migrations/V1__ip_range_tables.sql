-- The three IP range tables. Ranges in one table never overlap (the
-- importer validates this), so the row for an address is the one with the
-- greatest start_ip <= address, provided its end_ip >= address: a single
-- backward probe of the unique start_ip index, whatever the table's size.

CREATE TABLE ip_service_cn (
    id            bigserial    PRIMARY KEY,
    create_time   timestamptz  NOT NULL DEFAULT now(),
    update_time   timestamptz  NOT NULL DEFAULT now(),
    start_ip      int8         NOT NULL,
    end_ip        int8         NOT NULL,
    country_name  varchar(100) NOT NULL DEFAULT '',
    province_name varchar(100) NOT NULL DEFAULT '',
    city_name     varchar(100) NOT NULL DEFAULT '',
    district_name varchar(100) NOT NULL DEFAULT '',
    carrier_name  varchar(100) NOT NULL DEFAULT '',
    country_code  varchar(16)  NOT NULL DEFAULT '',
    province_code varchar(16)  NOT NULL DEFAULT '',
    city_code     varchar(16)  NOT NULL DEFAULT '',
    CONSTRAINT ip_service_cn_range CHECK (0 <= start_ip AND start_ip <= end_ip AND end_ip <= 4294967295)
);
CREATE UNIQUE INDEX ip_service_cn_start_ip ON ip_service_cn (start_ip);

CREATE TABLE ip_service_en (
    id            bigserial    PRIMARY KEY,
    create_time   timestamptz  NOT NULL DEFAULT now(),
    update_time   timestamptz  NOT NULL DEFAULT now(),
    start_ip      int8         NOT NULL,
    end_ip        int8         NOT NULL,
    country_name  varchar(100) NOT NULL DEFAULT '',
    province_name varchar(100) NOT NULL DEFAULT '',
    city_name     varchar(100) NOT NULL DEFAULT '',
    district_name varchar(100) NOT NULL DEFAULT '',
    carrier_name  varchar(100) NOT NULL DEFAULT '',
    country_code  varchar(16)  NOT NULL DEFAULT '',
    province_code varchar(16)  NOT NULL DEFAULT '',
    city_code     varchar(16)  NOT NULL DEFAULT '',
    CONSTRAINT ip_service_en_range CHECK (0 <= start_ip AND start_ip <= end_ip AND end_ip <= 4294967295)
);
CREATE UNIQUE INDEX ip_service_en_start_ip ON ip_service_en (start_ip);

-- IPv6 bounds are inet host addresses (/128): exact, btree-ordered by
-- address, and readable in psql.
CREATE TABLE ip_service_v6 (
    id            bigserial    PRIMARY KEY,
    create_time   timestamptz  NOT NULL DEFAULT now(),
    update_time   timestamptz  NOT NULL DEFAULT now(),
    start_ip      inet         NOT NULL,
    end_ip        inet         NOT NULL,
    country_name  varchar(100) NOT NULL DEFAULT '',
    province_name varchar(100) NOT NULL DEFAULT '',
    city_name     varchar(100) NOT NULL DEFAULT '',
    district_name varchar(100) NOT NULL DEFAULT '',
    carrier_name  varchar(100) NOT NULL DEFAULT '',
    country_code  varchar(16)  NOT NULL DEFAULT '',
    province_code varchar(16)  NOT NULL DEFAULT '',
    city_code     varchar(16)  NOT NULL DEFAULT '',
    CONSTRAINT ip_service_v6_range CHECK (
        family(start_ip) = 6 AND family(end_ip) = 6
        AND masklen(start_ip) = 128 AND masklen(end_ip) = 128
        AND start_ip <= end_ip)
);
CREATE UNIQUE INDEX ip_service_v6_start_ip ON ip_service_v6 (start_ip);
