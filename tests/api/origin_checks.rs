//! The test origin itself: every misbehaviour the download tests rely on really happens.
//! Without these, a download test could pass because the fault never fired.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE, RETRY_AFTER,
};

use crate::origin::{Faults, Origin, content};
use crate::support::eventually;

/// Reads a body chunk by chunk; returns the bytes received and whether it ended cleanly.
async fn read_all(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

async fn origin_with(len: usize, faults: Faults) -> (Origin, bytes::Bytes) {
    let origin = Origin::start().await;
    let body = content(7, len);
    origin.put("f.bin", body.clone());
    origin.set_faults("f.bin", faults);
    (origin, body)
}

/// A client that gives up on a body after 300 ms without bytes (to see a stall).
fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

/// `GET /f.bin` with `Range: <range>`.
async fn get_range(http: &reqwest::Client, origin: &Origin, range: &str) -> reqwest::Response {
    http.get(origin.url("f.bin"))
        .header(RANGE, range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn it_serves_whole_bodies_ranges_and_validators() {
    let (origin, body) = origin_with(100_000, Faults::default()).await;
    let http = reqwest::Client::new();
    let whole = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[CONTENT_LENGTH], "100000");
    assert_eq!(whole.headers()[ACCEPT_RANGES], "bytes");
    assert_eq!(
        whole.headers()[ETAG].to_str().unwrap(),
        origin.etag("f.bin")
    );
    let modified = whole.headers()[LAST_MODIFIED].to_str().unwrap().to_owned();
    assert_eq!(read_all(whole).await, (body.to_vec(), true));

    let ranged = |if_range: String| {
        http.get(origin.url("f.bin"))
            .header(RANGE, "bytes=40000-")
            .header(IF_RANGE, if_range)
            .send()
    };
    for validator in [origin.etag("f.bin"), modified] {
        let part = ranged(validator).await.unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.headers()[CONTENT_RANGE], "bytes 40000-99999/100000");
        assert_eq!(read_all(part).await, (body[40_000..].to_vec(), true));
    }
    let stale = ranged("\"old\"".into()).await.unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::OK,
        "a stale If-Range gets it all"
    );
    assert_eq!(read_all(stale).await.0, body.to_vec());

    let seen = origin.requests("f.bin");
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=40000-"));
    assert_eq!(seen[1].range_start(), 40_000);
    assert_eq!(
        seen[1].if_range.as_deref(),
        Some(origin.etag("f.bin").as_str())
    );
    assert_eq!(origin.requests("other").len(), 0);
    let missing = http.get(origin.url("other")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_new_version_gets_a_new_etag_and_stale_ranges_get_the_new_body() {
    let (origin, _) = origin_with(50_000, Faults::default()).await;
    let old = origin.etag("f.bin");
    let newer = content(8, 60_000);
    origin.put("f.bin", newer.clone());
    assert_ne!(origin.etag("f.bin"), old);
    let response = reqwest::Client::new()
        .get(origin.url("f.bin"))
        .header(RANGE, "bytes=100-")
        .header(IF_RANGE, old)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(read_all(response).await, (newer.to_vec(), true));
}

#[tokio::test]
async fn a_drop_truncates_the_body_and_only_as_often_as_asked() {
    let faults = Faults {
        drop_after: Some(70_000),
        drop_times: 1,
        ..Faults::default()
    };
    let (origin, body) = origin_with(200_000, faults).await;
    let http = reqwest::Client::new();
    let first = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(first.headers()[CONTENT_LENGTH], "200000");
    let (got, clean) = read_all(first).await;
    assert!(!clean, "the client must see an error, not a clean end");
    assert_eq!(got.len(), 70_000, "every byte before the drop arrives");
    assert_eq!(got, body[..got.len()].to_vec());
    let second = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(read_all(second).await, (body.to_vec(), true));
    // Every response drops with drop_times = 0.
    origin.update_faults("f.bin", |f| {
        f.drop_after = Some(10_000);
        f.drop_times = 0;
    });
    for _ in 0..2 {
        let response = http.get(origin.url("f.bin")).send().await.unwrap();
        assert!(!read_all(response).await.1);
    }
}

#[tokio::test]
async fn a_chunked_drop_is_an_error_too() {
    let faults = Faults {
        drop_after: Some(50_000),
        drop_times: 1,
        no_content_length: true,
        ..Faults::default()
    };
    let (origin, body) = origin_with(120_000, faults).await;
    let http = reqwest::Client::new();
    let first = http.get(origin.url("f.bin")).send().await.unwrap();
    assert!(first.headers().get(CONTENT_LENGTH).is_none());
    assert_eq!(first.content_length(), None);
    let (got, clean) = read_all(first).await;
    assert!(!clean);
    assert_eq!(got, body[..50_000].to_vec());
    let second = http.get(origin.url("f.bin")).send().await.unwrap();
    assert!(second.headers().get(CONTENT_LENGTH).is_none());
    assert_eq!(read_all(second).await, (body.to_vec(), true));
}

#[tokio::test]
async fn statuses_come_first_in_order_with_retry_after() {
    let faults = Faults {
        statuses: [(503, Some("1".to_owned())), (500, None)].into(),
        ..Faults::default()
    };
    let (origin, body) = origin_with(1_000, faults).await;
    let http = reqwest::Client::new();
    let first = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.headers()[RETRY_AFTER], "1");
    let second = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(second.headers().get(RETRY_AFTER).is_none());
    let third = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(read_all(third).await, (body.to_vec(), true));
    let statuses: Vec<u16> = origin.requests("f.bin").iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 500, 200]);
}

#[tokio::test]
async fn ignored_ranges_missing_validators_and_ignored_if_range() {
    let faults = Faults {
        ignore_range: true,
        no_validators: true,
        ..Faults::default()
    };
    let (origin, body) = origin_with(30_000, faults).await;
    let http = reqwest::Client::new();
    let response = get_range(&http, &origin, "bytes=10-").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(ETAG).is_none());
    assert!(response.headers().get(LAST_MODIFIED).is_none());
    assert_eq!(read_all(response).await.0, body.to_vec());

    origin.set_faults(
        "f.bin",
        Faults {
            ignore_if_range: true,
            ..Faults::default()
        },
    );
    let response = http
        .get(origin.url("f.bin"))
        .header(RANGE, "bytes=10-")
        .header(IF_RANGE, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(read_all(response).await.0, body[10..].to_vec());
}

#[tokio::test]
async fn the_rate_limit_slows_the_body_down() {
    let faults = Faults {
        rate: Some(1_000_000),
        ..Faults::default()
    };
    let (origin, body) = origin_with(300_000, faults).await;
    let started = Instant::now();
    let response = reqwest::get(origin.url("f.bin")).await.unwrap();
    assert_eq!(read_all(response).await, (body.to_vec(), true));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(280), "{took:?}");
    assert_eq!(origin.bytes_sent("f.bin"), 300_000);
}

#[tokio::test]
async fn a_stall_stops_sending_and_a_hold_waits_for_release() {
    let faults = Faults {
        stall_after: Some(40_000),
        ..Faults::default()
    };
    let (origin, body) = origin_with(100_000, faults).await;
    let http = impatient();
    let stalled = http.get(origin.url("f.bin")).send().await.unwrap();
    let (got, clean) = read_all(stalled).await;
    assert!(!clean, "a stalled body times out");
    assert_eq!(got, body[..40_000].to_vec());
    assert_eq!(origin.bytes_sent("f.bin"), 40_000);

    origin.set_faults(
        "f.bin",
        Faults {
            hold_after: Some(30_000),
            ..Faults::default()
        },
    );
    let http = reqwest::Client::new();
    let mut held = http.get(origin.url("f.bin")).send().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 30_000 {
        got.extend_from_slice(&held.chunk().await.unwrap().unwrap());
    }
    assert_eq!(got.len(), 30_000, "nothing past the hold point");
    assert_eq!(origin.bytes_sent("f.bin"), 70_000);
    origin.release("f.bin");
    let (rest, clean) = read_all(held).await;
    assert!(clean);
    got.extend_from_slice(&rest);
    assert_eq!(got, body.to_vec());
    // Released: later responses are not held.
    let again = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(read_all(again).await, (body.to_vec(), true));
}

#[tokio::test]
async fn a_stall_once_hangs_only_the_first_response_to_reach_its_byte() {
    let faults = Faults {
        stall_once_at: Some(60_000),
        ..Faults::default()
    };
    let (origin, body) = origin_with(100_000, faults).await;
    let http = impatient();
    // A range that ends before the byte is not hung, and does not use the stall up.
    let before = get_range(&http, &origin, "bytes=0-49999").await;
    assert_eq!(read_all(before).await, (body[..50_000].to_vec(), true));
    let hung = get_range(&http, &origin, "bytes=40000-").await;
    let (got, clean) = read_all(hung).await;
    assert!(!clean, "the first response to reach the byte hangs there");
    assert_eq!(got, body[40_000..60_000].to_vec());
    let later = get_range(&http, &origin, "bytes=50000-").await;
    assert_eq!(read_all(later).await, (body[50_000..].to_vec(), true));
}

#[tokio::test]
async fn open_responses_end_when_the_client_goes_away() {
    let faults = Faults {
        rate: Some(500_000),
        ..Faults::default()
    };
    let (origin, _) = origin_with(2_000_000, faults).await;
    let mut response = reqwest::get(origin.url("f.bin")).await.unwrap();
    response.chunk().await.unwrap().unwrap();
    assert_eq!(origin.open_responses("f.bin"), 1);
    drop(response);
    eventually("the origin notices the client left", || {
        origin.open_responses("f.bin") == 0
    })
    .await;
    let sent = origin.bytes_sent("f.bin");
    assert!(sent < 2_000_000, "{sent}");
}

#[tokio::test]
async fn requests_are_logged_with_their_headers() {
    let (origin, _) = origin_with(10, Faults::default()).await;
    let response = reqwest::Client::new()
        .get(origin.url("f.bin"))
        .bearer_auth("tok")
        .header("x-custom", "yes")
        .send()
        .await
        .unwrap();
    read_all(response).await;
    let seen = &origin.requests("f.bin")[0];
    assert_eq!(seen.authorization.as_deref(), Some("Bearer tok"));
    assert_eq!(seen.header("x-custom"), Some("yes"));
    assert_eq!(seen.range, None);
    assert_eq!(seen.range_start(), 0);
    assert_eq!(seen.planned_bytes, 10);
}

#[tokio::test]
async fn a_shifted_range_answers_later_bytes_than_asked_as_often_as_asked() {
    let faults = Faults {
        shift_range: Some(1_000),
        shift_times: 1,
        ..Faults::default()
    };
    let (origin, body) = origin_with(50_000, faults).await;
    let http = reqwest::Client::new();
    let shifted = get_range(&http, &origin, "bytes=100-199").await;
    assert_eq!(shifted.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(shifted.headers()[CONTENT_RANGE], "bytes 1100-1199/50000");
    assert_eq!(read_all(shifted).await, (body[1100..1200].to_vec(), true));
    let honest = get_range(&http, &origin, "bytes=100-199").await;
    assert_eq!(honest.headers()[CONTENT_RANGE], "bytes 100-199/50000");
    assert_eq!(read_all(honest).await, (body[100..200].to_vec(), true));
}

#[tokio::test]
async fn extra_bytes_follow_the_asked_range_in_the_same_body() {
    let faults = Faults {
        extra_bytes: Some(500),
        ..Faults::default()
    };
    let (origin, body) = origin_with(50_000, faults).await;
    let http = reqwest::Client::new();
    let response = get_range(&http, &origin, "bytes=100-199").await;
    assert_eq!(response.headers()[CONTENT_RANGE], "bytes 100-199/50000");
    assert_eq!(response.headers()[CONTENT_LENGTH], "600");
    let (got, clean) = read_all(response).await;
    assert!(clean);
    assert_eq!(got[..100], body[100..200]);
    assert_eq!(got.len(), 600);
    assert!(
        got[100..].iter().all(|b| *b == 0xAA),
        "junk after the range"
    );
}

#[tokio::test]
async fn a_long_content_length_ends_the_body_early_with_an_error() {
    let faults = Faults {
        long_by: Some(1_000),
        ignore_range: true,
        ..Faults::default()
    };
    let (origin, body) = origin_with(30_000, faults).await;
    let response = reqwest::Client::new()
        .get(origin.url("f.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[CONTENT_LENGTH], "31000");
    let (got, clean) = read_all(response).await;
    assert!(!clean, "a body shorter than its length is an error");
    assert_eq!(got, body.to_vec());
}

#[tokio::test]
async fn an_announced_petabyte_is_what_the_headers_say_but_not_what_is_sent() {
    const PB: u64 = 1 << 50;
    let faults = Faults {
        announce_len: Some(PB),
        ..Faults::default()
    };
    let (origin, body) = origin_with(30_000, faults).await;
    let http = reqwest::Client::new();
    let ranged = get_range(&http, &origin, "bytes=0-").await;
    assert_eq!(
        ranged.headers()[CONTENT_RANGE].to_str().unwrap(),
        format!("bytes 0-{}/{PB}", PB - 1)
    );
    assert_eq!(ranged.headers()[CONTENT_LENGTH], PB.to_string().as_str());
    let (got, clean) = read_all(ranged).await;
    assert!(!clean);
    assert_eq!(got, body.to_vec());
    let whole = http.get(origin.url("f.bin")).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.content_length(), Some(PB));
}

#[tokio::test]
async fn gzip_is_sent_encoded_whatever_the_client_accepts() {
    let origin = Origin::start().await;
    let plain = content(9, 200_000);
    let encoded = origin.put_gzip("f.gz", &plain);
    let response = reqwest::Client::new()
        .get(origin.url("f.gz"))
        .header("accept-encoding", "identity")
        .header(RANGE, "bytes=0-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(
        response.headers()[CONTENT_RANGE].to_str().unwrap(),
        format!("bytes 0-{}/{}", encoded.len() - 1, encoded.len())
    );
    let (got, clean) = read_all(response).await;
    assert!(clean);
    assert_eq!(got, encoded.to_vec(), "the encoded bytes on the wire");
    // They really are gzip: the system's gzip decodes them to the content.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.gz");
    std::fs::write(&path, &got).unwrap();
    let decoded = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .unwrap();
    assert!(decoded.status.success(), "{decoded:?}");
    assert_eq!(decoded.stdout, plain.to_vec());
}

#[tokio::test]
async fn a_replacement_mid_body_cuts_it_and_serves_the_new_version() {
    let newer = content(10, 40_000);
    let faults = Faults {
        replace_after: Some((20_000, newer.clone())),
        ..Faults::default()
    };
    let (origin, body) = origin_with(50_000, faults).await;
    let old_etag = origin.etag("f.bin");
    let http = reqwest::Client::new();
    let (got, clean) = read_all(http.get(origin.url("f.bin")).send().await.unwrap()).await;
    assert!(!clean);
    assert_eq!(got, body[..20_000].to_vec());
    assert_ne!(origin.etag("f.bin"), old_etag, "a new version");
    let stale = http
        .get(origin.url("f.bin"))
        .header(RANGE, "bytes=20000-")
        .header(IF_RANGE, old_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(read_all(stale).await, (newer.to_vec(), true), "once only");
}

#[tokio::test]
async fn a_trickle_sends_a_few_bytes_per_interval() {
    let faults = Faults {
        trickle: Some((100, Duration::from_millis(20))),
        ..Faults::default()
    };
    let (origin, body) = origin_with(1_000, faults).await;
    let started = Instant::now();
    let mut response = reqwest::Client::new()
        .get(origin.url("f.bin"))
        .send()
        .await
        .unwrap();
    let mut pieces = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        pieces.push(chunk);
    }
    assert!(pieces.iter().all(|p| p.len() <= 100), "{pieces:?}");
    assert_eq!(pieces.concat(), body.to_vec());
    assert!(started.elapsed() >= Duration::from_millis(200));
}
