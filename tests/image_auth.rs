//! Registry auth against real registries: Basic (htpasswd) and the Bearer
//! token flow (registry `auth: token` + a token server in the test that
//! signs JWTs with a key whose certificate is in the registry's bundle),
//! the latter over TLS with a CA from registries.yaml.

mod image_support;
use base64::Engine;
use image_support::*;
use picolet::rt::block_on;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const BASIC_PORT: u16 = 5101;
const TOKEN_REGISTRY_PORT: u16 = 5102;
const TOKEN_SERVER_PORT: u16 = 5103;

fn busybox_layout(root: &TestRoot) -> std::path::PathBuf {
    let l = root.path("layout");
    let tar = layer_tar(&[("hello.txt", b"hello auth\n")]);
    write_layout(&l, "v1", &[gz_layer(&tar)], None);
    l
}

#[test]
fn basic_auth_with_docker_config_and_registries_yaml() {
    need_tool("htpasswd");
    let root = TestRoot::new("basic");
    let htp = root.path("htpasswd");
    let line = sh("htpasswd", &["-Bbn", "picolet", "s3cret"]);
    std::fs::write(&htp, line).unwrap();
    let addr = start_registry(
        &root,
        BASIC_PORT,
        "",
        &format!(
            "auth:\n  htpasswd:\n    realm: picolet-test\n    path: {}\n",
            htp.display()
        ),
    );
    let layout = busybox_layout(&root);
    let image = format!("{addr}/picolet-img/basic:v1");
    push(&layout, "v1", &image, &["--dest-creds", "picolet:s3cret"]);

    // anonymous: 401 naming the missing credentials
    let svc = root.service(&root.config(None, None, ""));
    let e = format!("{:#}", block_on(svc.pull(&image)).unwrap_err());
    assert!(
        e.contains(&image) && e.contains("401") && e.contains("no credentials"),
        "{e}"
    );

    // wrong password in config.json: 401
    let bad = base64::engine::general_purpose::STANDARD.encode("picolet:wrong");
    let svc = root.service(&root.config(
        None,
        Some(&format!(r#"{{"auths":{{"{addr}":{{"auth":"{bad}"}}}}}}"#)),
        "",
    ));
    let e = format!("{:#}", block_on(svc.pull(&image)).unwrap_err());
    assert!(e.contains("unauthorized (401)"), "{e}");
    assert!(svc.list().unwrap().is_empty());

    // docker config.json
    let good = base64::engine::general_purpose::STANDARD.encode("picolet:s3cret");
    let svc = root.service(&root.config(
        None,
        Some(&format!(
            r#"{{"auths":{{"http://{addr}":{{"auth":"{good}"}}}}}}"#
        )),
        "",
    ));
    let img = block_on(svc.pull(&image)).unwrap();
    assert!(img.repo_tags.contains(&image));

    // registries.yaml auth (a fresh store)
    std::fs::remove_dir_all(root.path("root")).unwrap();
    std::fs::remove_file(root.path("docker-config.json")).unwrap();
    let yaml = format!(
        "configs:\n  \"{addr}\":\n    auth:\n      username: picolet\n      password: s3cret\n"
    );
    let svc = root.service(&root.config(Some(&yaml), None, ""));
    let img2 = block_on(svc.pull(&image)).unwrap();
    assert_eq!(img.id, img2.id);
}

fn openssl(args: &[&str]) {
    need_tool("openssl");
    sh("openssl", args);
}

/// A token server minting ES256 JWTs for `picolet:tokenpw` only.
struct TokenServer {
    scopes: Arc<Mutex<Vec<String>>>,
}

fn start_token_server(key_pem: &std::path::Path, cert_pem: &std::path::Path) -> TokenServer {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key_pem).unwrap();
    let rustls::pki_types::PrivateKeyDer::Pkcs8(k) = key else {
        panic!("token key is not PKCS#8")
    };
    let rng = ring::rand::SystemRandom::new();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        k.secret_pkcs8_der(),
        &rng,
    )
    .unwrap();
    let cert = rustls::pki_types::CertificateDer::from_pem_file(cert_pem).unwrap();
    let x5c = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let l = TcpListener::bind(("127.0.0.1", TOKEN_SERVER_PORT)).unwrap();
    let scopes = Arc::new(Mutex::new(Vec::new()));
    let sc = scopes.clone();
    std::thread::spawn(move || {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let mut authz = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if h.to_ascii_lowercase().starts_with("authorization:") {
                    authz = h[14..].trim().to_string();
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let query = target.split_once('?').map(|x| x.1).unwrap_or("");
            let mut service = String::new();
            let mut access = Vec::new();
            for kv in query.split('&') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let v = urldecode(v);
                match k {
                    "service" => service = v,
                    "scope" => {
                        sc.lock().unwrap().push(v.clone());
                        let parts: Vec<&str> = v.split(':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({"type": parts[0], "name": parts[1],
                                "actions": parts[2].split(',').collect::<Vec<_>>()}));
                        }
                    }
                    _ => {}
                }
            }
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("picolet:tokenpw")
            );
            if authz != want {
                let _ = c.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
            let claims = serde_json::json!({"iss": "picolet-test-issuer", "sub": "picolet",
                "aud": service, "exp": now + 300, "nbf": now - 10, "iat": now,
                "jti": format!("{now}-{}", access.len()), "access": access});
            let signing_input = format!(
                "{}.{}",
                b64.encode(serde_json::to_vec(&header).unwrap()),
                b64.encode(serde_json::to_vec(&claims).unwrap())
            );
            let sig = kp.sign(&rng, signing_input.as_bytes()).unwrap();
            let jwt = format!("{signing_input}.{}", b64.encode(sig.as_ref()));
            let body =
                serde_json::to_vec(&serde_json::json!({"token": jwt, "expires_in": 300})).unwrap();
            let _ = c.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                    .as_bytes(),
            );
            let _ = c.write_all(&body);
        }
    });
    TokenServer { scopes }
}

fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bearer_token_flow_over_tls() {
    let root = TestRoot::new("bearer");
    let p = |n: &str| root.path(n).to_string_lossy().into_owned();
    // CA and a server certificate for 127.0.0.1
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=picolet-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        root.path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("server.pem"),
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
    ]);
    // the token signing key, its certificate in the registry's bundle
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p("token.key"),
        "-out",
        &p("token.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=picolet-test-token",
    ]);
    let ts = start_token_server(&root.path("token.key"), &root.path("token.pem"));
    let addr = start_registry(
        &root,
        TOKEN_REGISTRY_PORT,
        &format!("  tls:\n    certificate: {}\n    key: {}\n", p("server.pem"), p("server.key")),
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{TOKEN_SERVER_PORT}/token\n    service: picolet-test\n    issuer: picolet-test-issuer\n    rootcertbundle: {}\n",
            p("token.pem")
        ),
    );
    let layout = busybox_layout(&root);
    let image = format!("{addr}/picolet-img/bearer:v1");
    push(&layout, "v1", &image, &["--dest-creds", "picolet:tokenpw"]);
    let image2 = format!("{addr}/picolet-img/bearer:v2");
    push(&layout, "v1", &image2, &["--dest-creds", "picolet:tokenpw"]);

    // TLS verified against the configured CA; credentials for the token server.
    let yaml = format!(
        "configs:\n  \"{addr}\":\n    auth: {{username: picolet, password: tokenpw}}\n    tls:\n      ca_file: {}\n",
        p("ca.pem")
    );
    let svc = root.service(&root.config(Some(&yaml), None, ""));
    ts.scopes.lock().unwrap().clear();
    block_on(async {
        let img = svc.pull(&image).await.unwrap();
        assert!(img.repo_tags.contains(&image));
        // second pull of the same repository reuses the cached token
        svc.pull(&image2).await.unwrap();
    });
    let scopes = ts.scopes.lock().unwrap().clone();
    assert_eq!(
        scopes,
        vec!["repository:picolet-img/bearer:pull"],
        "token requests: {scopes:?}"
    );

    // Without the CA (system roots only) the certificate is rejected.
    std::fs::remove_dir_all(root.path("root")).unwrap();
    let yaml_noca = format!("configs:\n  \"{addr}\":\n    auth: {{username: picolet, password: tokenpw}}\n    tls: {{}}\n");
    let svc = root.service(&root.config(Some(&yaml_noca), None, ""));
    let e = format!("{:#}", block_on(svc.pull(&image)).unwrap_err());
    assert!(
        e.contains("TLS") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    // insecure_skip_verify accepts it
    let yaml_insecure = format!("configs:\n  \"{addr}\":\n    auth: {{username: picolet, password: tokenpw}}\n    tls: {{insecure_skip_verify: true}}\n");
    let svc = root.service(&root.config(Some(&yaml_insecure), None, ""));
    block_on(svc.pull(&image)).unwrap();
    // wrong token-server credentials: the token request fails with 401
    std::fs::remove_dir_all(root.path("root")).unwrap();
    let yaml_bad = format!("configs:\n  \"{addr}\":\n    auth: {{username: picolet, password: nope}}\n    tls: {{ca_file: {}}}\n", p("ca.pem"));
    let svc = root.service(&root.config(Some(&yaml_bad), None, ""));
    let e = format!("{:#}", block_on(svc.pull(&image)).unwrap_err());
    assert!(e.contains("token request") && e.contains("401"), "{e}");
    assert!(svc.list().unwrap().is_empty());
}
