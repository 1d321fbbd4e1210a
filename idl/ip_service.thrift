// The wire contract of xm-ip-service, inherited from the Go service
// xm_ip_service. Running Go, Java and Python clients depend on it:
// field ids 1-12, their types and names, the struct names, the service
// name and the method names never change. New fields are only ever
// optional, with new ids (old clients skip ids they do not know).

namespace go xm_ip_service
namespace java com.xm.ipservice
namespace py xm_ip_service

/**
 * Where one IP address is. Exactly one GeoInfo is returned per input
 * address, in input order.
 *
 * error_no / error_msg:
 *   0  found
 *   1  invalid IP text (empty, hostname, CIDR, host:port, zone index,
 *      leading-zero octets, garbage, too long)
 *   2  not found in any source
 *   3  a backend failed (database unreachable or timed out, or no MaxMind
 *      database configured) and nothing else could answer
 *   4  unsupported lang; error_msg lists the supported ones
 * When error_no is not 0, fields 2-5, 7-9, 11 and 12 are empty (or 0) and
 * the optional fields 13-16 are unset.
 *
 * The network (geoip_asn, geoip_as_org) is set for every address the ASN
 * data covers, whichever source answered the place, or none: an address
 * whose place no source knows keeps error_no 2 (the ASN alone is not a
 * place, and old clients read error_no 0 as "the place fields are
 * filled"), with fields 17 and 18 set. They are unset for errors 1, 3
 * and 4.
 *
 * A correction (ip_service_overrides) outranks every source: its values
 * replace the answer's in answers of its language, and geoip_corrected
 * (19) says so. Where no source knows the place, a correction is the
 * answer (error_no 0, geoip_source "correction").
 *
 * An optional field (13 and later) is set only when it has a value: never
 * to an empty string, so that a client's isSet says something. Fields
 * 1-12 are always set, empty where there is nothing, as old clients
 * require.
 */
struct GeoInfo {
  /**
   * The input string, echoed as given; an input longer than any address
   * (over 64 bytes, always error 1) is echoed only in its first 64 bytes,
   * and error_msg says so, so that a reply never outgrows its request.
   */
  1: string ip,
  /** ISO 3166-1 alpha-2, e.g. "CN". */
  2: string geoip_country_code,
  /** Country name in the answer's language, e.g. "中国" or "China". */
  3: string geoip_country_name,
  /** GB/T 2260 code for Chinese table rows (e.g. "440100"); MaxMind's
      geoname_id for en rows and MaxMind answers. */
  4: string geoip_city_code,
  5: string geoip_city_name,
  /** See the error table above. */
  6: i32 error_no,
  /** GB/T 2260 code for Chinese table rows (e.g. "440000"); the first
      subdivision's ISO 3166-2 code as MaxMind stores it (e.g. "GD") otherwise. */
  7: string geoip_province_code,
  8: string geoip_province_name,
  /** Carrier (ISP) name; empty for MaxMind answers. */
  9: string geoip_carrier,
  /** Human-readable reason when error_no is not 0, else empty. */
  10: string error_msg,
  /** First address of the matched range as an unsigned IPv4 integer;
      0 for IPv6 answers. */
  11: i64 geoip_start_ip,
  /** Last address of the matched range as an unsigned IPv4 integer;
      0 for IPv6 answers. */
  12: i64 geoip_end_ip,
  /** District (区/县) name; unset where the source has none. */
  13: optional string geoip_district_name,
  /** First address of the matched range as text, IPv4 or IPv6. */
  14: optional string geoip_start_ip_str,
  /** Last address of the matched range as text, IPv4 or IPv6. */
  15: optional string geoip_end_ip_str,
  /** Which source answered: "cn", "en", "v6" or "maxmind"; "correction"
      when only a correction knows the place (see geoip_corrected). */
  16: optional string geoip_source,
  /** The autonomous system number announcing the address (0 to
      4294967295, hence i64), from the ip_service_asn tables (RouteViews
      and DB-IP data, CC BY 4.0); unset where they do not cover it. */
  17: optional i64 geoip_asn,
  /** The AS organisation's name, as the ASN data gives it (e.g.
      "Cloudflare, Inc."); set exactly when geoip_asn is. */
  18: optional string geoip_as_org,
  /** true when a correction (ip_service_overrides) changed this answer:
      its fields replaced the ones it gives, in the answer's language;
      unset otherwise. geoip_source still names the source underneath, or
      is "correction" where no source knew the place. */
  19: optional bool geoip_corrected
}

struct GeoRequest {
  /** Addresses to locate: IPv4 dotted quads or any IPv6 text form. */
  1: list<string> ipList,
  /** "zh-CN" (also zh, zh_CN, cn, or empty), "en" (also en-US), or a
      language the MaxMind database carries: de, es, fr, ja, pt-BR, ru.
      Matched case-insensitively. */
  2: string lang
}

/**
 * Besides answers, a call may get a TApplicationException:
 *   UNKNOWN_METHOD (1)  a method this service does not have
 *   PROTOCOL_ERROR (7)  arguments that do not decode, or a batch larger
 *                       than the server's --max-batch (default 10000)
 * The connection stays open after either. A frame over the size limit or
 * bytes that are not Thrift close the connection.
 */
service IPService {
  /** Chinese answers: the cn (IPv4) or v6 table; MaxMind (zh-CN names)
      when the table has no row or the row's country is not 中国. */
  list<GeoInfo> queryGeoInfoByIP(1: list<string> ipList);

  /** Answers in req.lang: zh-CN as queryGeoInfoByIP; en from the en table
      for IPv4 with the same China rule, else MaxMind; other languages
      from MaxMind only. */
  list<GeoInfo> queryGeoInfo(1: GeoRequest req);

  /** English answers from MaxMind only, for every country. */
  list<GeoInfo> queryI18nGeoInfoByIP(1: list<string> ipList);
}
