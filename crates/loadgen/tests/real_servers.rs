//! Smoke tests of xks-load against the real servers: the XKS proxy (`xks-proxy-test`, through
//! `testkit::proxy`) on each backend (embedded, PKCS#11 on SoftHSMv2, OpenBao Transit), over
//! TLS and mTLS, and the KMS front end (`kms-frontend-test`, through `testkit::frontend`).
//! Each scenario runs briefly at low concurrency and must see no error. Nothing is timed:
//! these check that the generator speaks both protocols (real SigV4, real bodies), not how
//! fast anything is.

use std::time::{Duration, SystemTime};

use loadgen::run::{Mode, RunConfig, RunResult, run};
use loadgen::scenario::{
    EncryptOptions, KMS_CONTENT_TYPE, KeyOrigin, Scenario, UnsignedRequest, sign_and_build,
};
use loadgen::target::{Connector, HttpOptions, HttpVersion, Target};
use service_tls::client::ClientIdentity;
use service_tls::pki::CertificateAuthority;
use sigv4_auth::{Credential, SigningSecret};
use testkit::frontend::{FrontendFixture, RunningFrontend};
use testkit::kms_backends::{OpenBao, SoftHsm};
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};

fn closed(concurrency: usize, seconds: u64) -> RunConfig {
    RunConfig {
        mode: Mode::Closed { concurrency },
        duration: Duration::from_secs(seconds),
        ..RunConfig::default()
    }
}

/// Exactly `requests` requests from `concurrency` workers (10 s at most).
fn exactly(requests: u64, concurrency: usize) -> RunConfig {
    RunConfig {
        requests: Some(requests),
        ..closed(concurrency, 10)
    }
}

/// Runs `scenario` and asserts that every request succeeded.
async fn run_clean(
    what: &str,
    target: Target,
    scenario: Scenario,
    http: &HttpOptions,
    config: RunConfig,
) -> RunResult {
    let result = run(target, scenario, http.clone(), config)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_clean(what, &result);
    result
}

/// A KMS target signing as the front end's principal `alice`, and how to reach it.
fn alice_on(frontend: &RunningFrontend) -> (Target, HttpOptions) {
    let alice = frontend.alice();
    let target = Target::kms(
        &frontend.endpoint(),
        Credential::new(
            alice.access_key_id.clone(),
            SigningSecret::new(alice.secret.clone()),
        ),
        "us-east-1",
    );
    let http = HttpOptions {
        ca_pem: Some(std::fs::read_to_string(&frontend.fixture.pki.ca_pem).expect("CA")),
        ..HttpOptions::default()
    };
    (target, http)
}

fn assert_clean(what: &str, result: &RunResult) {
    assert!(
        result.stats.errors.is_empty(),
        "{what}: errors {:?}",
        result.stats.errors
    );
    assert!(result.stats.requests > 0, "{what}: no request completed");
    assert_eq!(result.stats.successes, result.stats.requests, "{what}");
}

/// The XKS target of key store `store`'s `bench-key`, signed with its first credential (or
/// with `secret` instead of the real one).
fn proxy_target(proxy: &RunningProxy, store: usize, secret: Option<&str>) -> Target {
    let (akid, real_secret) = proxy.fixture.stores[store].credentials[0].clone();
    Target::xks(
        &proxy.api_url(store, ""),
        "bench-key",
        Credential::new(akid, SigningSecret::new(secret.unwrap_or(&real_secret))),
        "us-east-1",
    )
}

/// `spec` with the keys the scenarios use and the quota out of the way (the default 1,800
/// requests/s is not what these runs are about).
fn bench_store(spec: StoreSpec) -> StoreSpec {
    let mut spec = spec.with_keys(&["bench-key", "xks-proxy-health"]);
    spec.requests_per_second = Some(1_000_000);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xks_scenarios_against_the_real_proxy() {
    let proxy = ProxyFixture::new()
        .store(bench_store(StoreSpec::new("bench", "/bench")))
        .start();
    let ca_pem = std::fs::read_to_string(&proxy.fixture.pki.ca_pem).expect("CA");
    let http = HttpOptions {
        ca_pem: Some(ca_pem),
        ..HttpOptions::default()
    };
    let with_options = EncryptOptions {
        size: 4096,
        aad_size: Some(64),
        cdiv: true,
    };
    let scenarios = [
        Scenario::XksHealth,
        Scenario::XksMetadata,
        Scenario::XksEncrypt(EncryptOptions::default()),
        Scenario::XksEncrypt(with_options.clone()),
        Scenario::XksDecrypt(EncryptOptions::default()),
        Scenario::XksDecrypt(with_options.clone()),
        Scenario::XksMixed(with_options),
    ];
    for scenario in scenarios {
        let what = format!("{scenario:?}");
        let config = RunConfig {
            server_pid: Some(proxy.pid()),
            ..closed(4, 1)
        };
        let result = run_clean(
            &what,
            proxy_target(&proxy, 0, None),
            scenario,
            &http,
            config,
        )
        .await;
        let server = result.server.as_ref().expect("server CPU and RSS");
        assert_eq!(server.pid, proxy.pid());
        assert!(server.rss_peak_kib > 0);
    }

    // Open loop, and a new connection (TCP + full TLS handshake) per HTTP/1.1 request.
    let open = RunConfig {
        mode: Mode::Open {
            rate: 50.0,
            max_in_flight: 100,
        },
        duration: Duration::from_secs(1),
        ..RunConfig::default()
    };
    let result = run(
        proxy_target(&proxy, 0, None),
        Scenario::XksEncrypt(EncryptOptions::default()),
        http.clone(),
        open,
    )
    .await
    .expect("open loop");
    assert_clean("open loop", &result);
    assert_eq!(result.open_loop.expect("open-loop facts").not_sent, 0);

    let result = run(
        proxy_target(&proxy, 0, None),
        Scenario::XksDecrypt(EncryptOptions::default()),
        HttpOptions {
            version: HttpVersion::Http1,
            new_connection_per_request: true,
            ..http.clone()
        },
        exactly(10, 2),
    )
    .await
    .expect("new connection per request");
    assert_clean("new connection per request", &result);
    assert_eq!(
        result.stats.http_versions.get("HTTP/1.1").copied(),
        Some(10)
    );

    // The proxy's error names are reported as such: a wrong secret, an unknown key.
    let result = run(
        proxy_target(&proxy, 0, Some("not-the-secret")),
        Scenario::XksHealth,
        http.clone(),
        exactly(3, 1),
    )
    .await
    .expect("run with a wrong secret");
    assert_eq!(
        result.stats.errors.keys().collect::<Vec<_>>(),
        ["AuthenticationFailedException"]
    );
    let Target::Xks {
        url_base,
        credential,
        region,
        ..
    } = proxy_target(&proxy, 0, None)
    else {
        unreachable!()
    };
    let unknown_key = Target::Xks {
        url_base,
        key_id: "no-such-key".into(),
        credential,
        region,
    };
    let result = run(
        unknown_key,
        Scenario::XksEncrypt(EncryptOptions::default()),
        http,
        exactly(3, 1),
    )
    .await
    .expect("run with an unknown key");
    assert_eq!(
        result.stats.errors.keys().collect::<Vec<_>>(),
        ["KeyNotFoundException"]
    );
}

/// Every XKS scenario on the two external backends (PKCS#11 on SoftHSMv2, Transit on
/// OpenBao), over mTLS: the proxy asks for a client certificate and xks-load presents one.
/// SoftHSMv2 and OpenBao are required (a missing one fails this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xks_scenarios_on_the_hsm_and_transit_backends_over_mtls() {
    let hsm = SoftHsm::new();
    let bao = OpenBao::start();
    let mut fixture = ProxyFixture::new();
    fixture
        .env
        .push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
    let status = |name: &str| fixture.path().join(name).display().to_string();
    let hsm_store =
        StoreSpec::new("hsm", "/hsm").with_backend(hsm.backend_toml(&status("hsm-status.toml")));
    let vault_store = StoreSpec::new("vault", "/vault")
        .with_backend(bao.backend_toml(&status("vault-status.toml")));
    let clients_ca = CertificateAuthority::generate("bench client CA").expect("CA");
    let ca_file = fixture.path().join("tls/clients-ca.pem");
    std::fs::write(&ca_file, clients_ca.cert_pem()).expect("write");
    fixture.client_auth = Some((ca_file, vec!["xks-load".into()]));
    let proxy = fixture
        .store(bench_store(hsm_store))
        .store(bench_store(vault_store))
        .start();
    let cert = clients_ca
        .issue_client("xks-load", &[], None)
        .expect("client certificate");
    let http = HttpOptions {
        ca_pem: Some(std::fs::read_to_string(&proxy.fixture.pki.ca_pem).expect("CA")),
        identity: Some(ClientIdentity::from_issued(&cert, &clients_ca)),
        ..HttpOptions::default()
    };
    let with_options = EncryptOptions {
        size: 4096,
        aad_size: Some(64),
        cdiv: true,
    };
    for (store, backend) in [(0, "pkcs11"), (1, "transit")] {
        for scenario in [
            Scenario::XksHealth,
            Scenario::XksMetadata,
            Scenario::XksEncrypt(EncryptOptions::default()),
            Scenario::XksEncrypt(with_options.clone()),
            Scenario::XksDecrypt(with_options.clone()),
            Scenario::XksMixed(EncryptOptions::default()),
        ] {
            let what = format!("{backend}: {scenario:?}");
            let target = proxy_target(&proxy, store, None);
            run_clean(&what, target, scenario, &http, closed(4, 1)).await;
        }
    }

    // Without the client certificate the same requests get no answer at all.
    let result = run(
        proxy_target(&proxy, 0, None),
        Scenario::XksHealth,
        HttpOptions {
            identity: None,
            ..http
        },
        exactly(2, 1),
    )
    .await
    .expect("run without a client certificate");
    assert_eq!(result.stats.successes, 0);
    assert!(
        result
            .stats
            .errors
            .keys()
            .all(|name| name.starts_with("transport:")),
        "{:?}",
        result.stats.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_scenarios_against_the_front_end() {
    let frontend = FrontendFixture::new().start();
    let (target, http) = alice_on(&frontend);
    let target = || target.clone();

    // One key to use, made with a signed request of our own.
    let body = kms_call(
        target(),
        &http,
        &frontend.endpoint(),
        "TrentService.CreateKey",
        serde_json::json!({}),
    )
    .await;
    let key_id = body["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyId")
        .to_owned();

    let scenarios = [
        Scenario::KmsEncrypt {
            key_id: key_id.clone(),
            size: 32,
            grant_token: None,
        },
        Scenario::KmsDecrypt {
            key_id: key_id.clone(),
            size: 4096,
        },
        Scenario::KmsGenerateDataKey {
            key_id: key_id.clone(),
        },
    ];
    for scenario in scenarios {
        let what = format!("{scenario:?}");
        run_clean(&what, target(), scenario, &http, closed(2, 1)).await;
    }
    let create = Scenario::KmsCreateKey {
        origin: KeyOrigin::AwsKms,
    };
    let result = run_clean("kms-create-key", target(), create, &http, exactly(5, 1)).await;
    assert_eq!(result.stats.requests, 5);

    // KMS error names (`__type`) are reported without their namespace.
    let result = run(
        target(),
        Scenario::KmsEncrypt {
            key_id: "alias/does-not-exist".into(),
            size: 32,
            grant_token: None,
        },
        http,
        exactly(2, 1),
    )
    .await
    .expect("run with an unknown key");
    assert_eq!(
        result.stats.errors.keys().collect::<Vec<_>>(),
        ["NotFoundException"]
    );
}

/// One signed KMS call (`amz_target` is `TrentService.<Operation>`) made with the
/// generator's own client and signer; the answer's JSON, which must be a success.
async fn kms_call(
    target: Target,
    http: &HttpOptions,
    endpoint: &str,
    amz_target: &'static str,
    body: serde_json::Value,
) -> serde_json::Value {
    let client = Connector::new(http.clone())
        .expect("connector")
        .client(0)
        .expect("client");
    let operation = amz_target.trim_start_matches("TrentService.");
    let request = UnsignedRequest {
        operation,
        url: endpoint.into(),
        amz_target: Some(amz_target),
        content_type: KMS_CONTENT_TYPE,
        body: body.to_string().into_bytes(),
    };
    let request = sign_and_build(&target, request, SystemTime::now()).expect("sign");
    let response = client.execute(request).await.expect(operation);
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert!(status.is_success(), "{operation}: {status} {body}");
    body
}

/// The front end's scenarios on keys in an external key store: the front end calls the real
/// proxy (two HTTPS + SigV4 hops per request), and CreateKey with EXTERNAL_KEY_STORE takes a
/// fresh external key per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_scenarios_on_external_key_store_keys() {
    let xcreate: Vec<String> = (0..8).map(|i| format!("xcreate-{i}")).collect();
    let mut keys = vec!["bench-key"];
    keys.extend(xcreate.iter().map(String::as_str));
    let proxy = ProxyFixture::new()
        .store(StoreSpec::new("tenant", "/tenant").with_keys(&keys))
        .start();
    let mut f = FrontendFixture::new();
    f.extra_toml = format!(
        "[xks]\ntrusted_ca_bundle = \"{}\"\n[xks.resolve]\n\"xks.test\" = \"127.0.0.1:{}\"\n",
        proxy.fixture.pki.ca_pem.display(),
        proxy.port
    );
    let frontend = f.start();
    let (target, http) = alice_on(&frontend);
    let endpoint = frontend.endpoint();
    let target = || target.clone();
    let call = |operation, body| kms_call(target(), &http, &endpoint, operation, body);

    let (akid, secret) = proxy.fixture.stores[0].credentials[0].clone();
    let store = call(
        "TrentService.CreateCustomKeyStore",
        serde_json::json!({
            "CustomKeyStoreName": "bench",
            "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
            "XksProxyUriEndpoint": "https://xks.test",
            "XksProxyUriPath": "/tenant/kms/xks/v1",
            "XksProxyConnectivity": "PUBLIC_ENDPOINT",
            "XksProxyAuthenticationCredential": {"AccessKeyId": akid, "RawSecretAccessKey": secret},
        }),
    )
    .await;
    let store_id = store["CustomKeyStoreId"].as_str().expect("id").to_owned();
    call(
        "TrentService.ConnectCustomKeyStore",
        serde_json::json!({"CustomKeyStoreId": store_id}),
    )
    .await;
    let mut state = String::new();
    for _ in 0..200 {
        let d = call(
            "TrentService.DescribeCustomKeyStores",
            serde_json::json!({"CustomKeyStoreId": store_id}),
        )
        .await;
        state = d["CustomKeyStores"][0]["ConnectionState"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if state == "CONNECTED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "CONNECTED");
    let key = call(
        "TrentService.CreateKey",
        serde_json::json!({"Origin": "EXTERNAL_KEY_STORE", "CustomKeyStoreId": store_id, "XksKeyId": "bench-key"}),
    )
    .await;
    let key_id = key["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyId")
        .to_owned();

    for scenario in [
        Scenario::KmsEncrypt {
            key_id: key_id.clone(),
            size: 32,
            grant_token: None,
        },
        Scenario::KmsDecrypt {
            key_id: key_id.clone(),
            size: 32,
        },
        Scenario::KmsGenerateDataKey {
            key_id: key_id.clone(),
        },
    ] {
        let what = format!("XKS key: {scenario:?}");
        run_clean(&what, target(), scenario, &http, closed(2, 1)).await;
    }

    // Four CreateKeys, each on an external key of its own.
    let create = Scenario::KmsCreateKey {
        origin: KeyOrigin::ExternalKeyStore {
            custom_key_store_id: store_id,
            xks_key_id: "xcreate-{seq}".into(),
        },
    };
    let what = "kms-create-key EXTERNAL_KEY_STORE";
    let result = run_clean(what, target(), create.clone(), &http, exactly(4, 2)).await;
    assert_eq!(result.stats.requests, 4);
    // The same external keys again: each is in use now, and the error says so by name.
    let again = run(target(), create, http, exactly(2, 1))
        .await
        .expect("create XKS keys again");
    assert_eq!(
        again.stats.errors.keys().collect::<Vec<_>>(),
        ["XksKeyAlreadyInUseException"]
    );
}
