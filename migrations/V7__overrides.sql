-- Corrections: ranges whose answers the library's owners have corrected.
-- Kept apart from the tables they correct, so that no import of those
-- touches them; they outrank every source. A row corrects the answers of
-- one language (lang): a name given for zh-CN never shows in an English
-- answer. A value left empty keeps what the sources say. Ranges of one
-- language and family never overlap (the importer refuses it), so the
-- correction for an address is one backward probe of (lang, start_ip).

CREATE TABLE ip_service_overrides (
    id            bigserial    PRIMARY KEY,
    start_ip      inet         NOT NULL,
    end_ip        inet         NOT NULL,
    lang          text         NOT NULL CONSTRAINT ip_service_overrides_lang CHECK (lang IN ('zh-CN', 'en')),
    country_code  varchar(16)  NOT NULL DEFAULT '',
    country_name  varchar(100) NOT NULL DEFAULT '',
    province_code varchar(16)  NOT NULL DEFAULT '',
    province_name varchar(100) NOT NULL DEFAULT '',
    city_code     varchar(16)  NOT NULL DEFAULT '',
    city_name     varchar(100) NOT NULL DEFAULT '',
    district_name varchar(100) NOT NULL DEFAULT '',
    carrier_name  varchar(255) NOT NULL DEFAULT '',
    reason        text         NOT NULL CONSTRAINT ip_service_overrides_reason CHECK (reason <> ''),
    source        varchar(255) NOT NULL DEFAULT '',
    created_at    timestamptz  NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    CONSTRAINT ip_service_overrides_range CHECK (
        family(start_ip) = family(end_ip)
        AND masklen(start_ip) = CASE family(start_ip) WHEN 4 THEN 32 ELSE 128 END
        AND masklen(end_ip) = masklen(start_ip)
        AND start_ip <= end_ip)
);
CREATE UNIQUE INDEX ip_service_overrides_lang_start_ip ON ip_service_overrides (lang, start_ip);
