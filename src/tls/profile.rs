//! The Apple configuration profile (`.mobileconfig`) that installs the local CA
//! on iPhone, iPad and Mac: an XML property list with the certificate as base64
//! DER. Every string is XML-escaped.

use base64::Engine;

use super::ca::CaPublic;

pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config";

pub fn mobileconfig(ca: &CaPublic, server_name: &str) -> String {
    let der = base64::engine::general_purpose::STANDARD.encode(&ca.der);
    let digest = ca.fingerprint.replace(':', "").to_ascii_lowercase();
    // Stable identifiers: installing the profile again replaces it.
    let uuid = |salt: usize| {
        let hex = &digest[salt..salt + 32];
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    };
    let id = &digest[..16];
    let esc = |s: &str| html_escape::encode_text(s).into_owned();
    let name = esc(&ca.name);
    let server = esc(server_name);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>PayloadCertificateFileName</key>
      <string>lanchat-ca.crt</string>
      <key>PayloadContent</key>
      <data>{der}</data>
      <key>PayloadDescription</key>
      <string>The certificate authority of the {server} chat server on your local network.</string>
      <key>PayloadDisplayName</key>
      <string>{name}</string>
      <key>PayloadIdentifier</key>
      <string>lanchat.ca.{id}.certificate</string>
      <key>PayloadType</key>
      <string>com.apple.security.root</string>
      <key>PayloadUUID</key>
      <string>{uuid_cert}</string>
      <key>PayloadVersion</key>
      <integer>1</integer>
    </dict>
  </array>
  <key>PayloadDescription</key>
  <string>Lets this device open the {server} chat server over a secure connection (HTTPS). SHA-256 fingerprint: {fingerprint}</string>
  <key>PayloadDisplayName</key>
  <string>{server}: secure connection</string>
  <key>PayloadIdentifier</key>
  <string>lanchat.ca.{id}</string>
  <key>PayloadRemovalDisallowed</key>
  <false/>
  <key>PayloadType</key>
  <string>Configuration</string>
  <key>PayloadUUID</key>
  <string>{uuid_profile}</string>
  <key>PayloadVersion</key>
  <integer>1</integer>
</dict>
</plist>
"#,
        fingerprint = esc(&ca.fingerprint),
        uuid_cert = uuid(0),
        uuid_profile = uuid(32),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_escapes_names_and_carries_the_certificate() {
        let ca = CaPublic {
            der: vec![1, 2, 3],
            pem: String::new(),
            fingerprint: ["AB"; 32].join(":"),
            spki_sha256: String::new(),
            name: "R&D <lab> CA".into(),
        };
        let xml = mobileconfig(&ca, "Office \"chat\" & co");
        assert!(
            xml.contains("<string>R&amp;D &lt;lab&gt; CA</string>"),
            "{xml}"
        );
        assert!(xml.contains("Office \"chat\" &amp; co"), "{xml}");
        assert!(xml.contains("<data>AQID</data>"));
        assert!(xml.contains("com.apple.security.root"));
        assert!(!xml.contains("R&D"));
    }
}
