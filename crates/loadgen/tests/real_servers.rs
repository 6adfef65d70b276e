//! Smoke tests of xks-load against the real servers: the XKS proxy (`xks-proxy-test`, through
//! `testkit::proxy`) and the KMS front end (`kms-frontend-test`, through `testkit::frontend`).
//! Each scenario runs briefly at low concurrency and must see no error. Nothing is timed:
//! these check that the generator speaks both protocols (real SigV4, real bodies), not how
//! fast anything is.

use std::time::{Duration, SystemTime};

use loadgen::run::{Mode, RunConfig, RunResult, run};
use loadgen::scenario::{
    EncryptOptions, KMS_CONTENT_TYPE, KeyOrigin, Scenario, UnsignedRequest, sign_and_build,
};
use loadgen::target::{Connector, HttpOptions, HttpVersion, Target};
use sigv4_auth::{Credential, SigningSecret};
use testkit::frontend::FrontendFixture;
use testkit::proxy::{ProxyFixture, RunningProxy, StoreSpec};

fn closed(concurrency: usize, seconds: u64) -> RunConfig {
    RunConfig {
        mode: Mode::Closed { concurrency },
        duration: Duration::from_secs(seconds),
        ..RunConfig::default()
    }
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

fn proxy_target(proxy: &RunningProxy, secret: Option<&str>) -> Target {
    let (akid, real_secret) = proxy.fixture.stores[0].credentials[0].clone();
    Target::xks(
        &proxy.api_url(0, ""),
        "bench-key",
        Credential::new(akid, SigningSecret::new(secret.unwrap_or(&real_secret))),
        "us-east-1",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xks_scenarios_against_the_real_proxy() {
    let mut store = StoreSpec::new("bench", "/bench").with_keys(&["bench-key"]);
    // The default quota (1,800 requests/s) is not what these runs are about.
    store.requests_per_second = Some(1_000_000);
    let proxy = ProxyFixture::new().store(store).start();
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
        let result = run(proxy_target(&proxy, None), scenario, http.clone(), config)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_clean(&what, &result);
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
        proxy_target(&proxy, None),
        Scenario::XksEncrypt(EncryptOptions::default()),
        http.clone(),
        open,
    )
    .await
    .expect("open loop");
    assert_clean("open loop", &result);
    assert_eq!(result.open_loop.expect("open-loop facts").not_sent, 0);

    let result = run(
        proxy_target(&proxy, None),
        Scenario::XksDecrypt(EncryptOptions::default()),
        HttpOptions {
            version: HttpVersion::Http1,
            new_connection_per_request: true,
            ..http.clone()
        },
        RunConfig {
            requests: Some(10),
            ..closed(2, 10)
        },
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
        proxy_target(&proxy, Some("not-the-secret")),
        Scenario::XksHealth,
        http.clone(),
        RunConfig {
            requests: Some(3),
            ..closed(1, 10)
        },
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
    } = proxy_target(&proxy, None)
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
        RunConfig {
            requests: Some(3),
            ..closed(1, 10)
        },
    )
    .await
    .expect("run with an unknown key");
    assert_eq!(
        result.stats.errors.keys().collect::<Vec<_>>(),
        ["KeyNotFoundException"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_scenarios_against_the_front_end() {
    let frontend = FrontendFixture::new().start();
    let alice = frontend.alice().clone();
    let target = || {
        Target::kms(
            &frontend.endpoint(),
            Credential::new(
                alice.access_key_id.clone(),
                SigningSecret::new(alice.secret.clone()),
            ),
            "us-east-1",
        )
    };
    let http = HttpOptions {
        ca_pem: Some(std::fs::read_to_string(&frontend.fixture.pki.ca_pem).expect("CA")),
        ..HttpOptions::default()
    };

    // One key to use, made with a signed request of our own.
    let client = Connector::new(http.clone())
        .expect("connector")
        .client(0)
        .expect("client");
    let create = UnsignedRequest {
        operation: "CreateKey",
        url: frontend.endpoint().into(),
        amz_target: Some("TrentService.CreateKey"),
        content_type: KMS_CONTENT_TYPE,
        body: b"{}".to_vec(),
    };
    let request = sign_and_build(&target(), create, SystemTime::now()).expect("sign");
    let response = client.execute(request).await.expect("CreateKey");
    assert!(response.status().is_success(), "{}", response.status());
    let body: serde_json::Value = response.json().await.expect("JSON");
    let key_id = body["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("KeyId")
        .to_owned();

    let scenarios = [
        Scenario::KmsEncrypt {
            key_id: key_id.clone(),
            size: 32,
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
        let result = run(target(), scenario, http.clone(), closed(2, 1))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_clean(&what, &result);
    }
    let result = run(
        target(),
        Scenario::KmsCreateKey {
            origin: KeyOrigin::AwsKms,
        },
        http.clone(),
        RunConfig {
            requests: Some(5),
            ..closed(1, 10)
        },
    )
    .await
    .expect("create keys");
    assert_clean("kms-create-key", &result);
    assert_eq!(result.stats.requests, 5);

    // KMS error names (`__type`) are reported without their namespace.
    let result = run(
        target(),
        Scenario::KmsEncrypt {
            key_id: "alias/does-not-exist".into(),
            size: 32,
        },
        http,
        RunConfig {
            requests: Some(2),
            ..closed(1, 10)
        },
    )
    .await
    .expect("run with an unknown key");
    assert_eq!(
        result.stats.errors.keys().collect::<Vec<_>>(),
        ["NotFoundException"]
    );
}
