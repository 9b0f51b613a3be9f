//! The real-cloud adapters (`--features aws`) exercised through the official AWS SDK against a local AWS API
//! emulator, moto (`moto[server]` from PyPI, installed into `.venv` by scripts/test.sh), started here on
//! loopback: EC2 (RunInstances on demand and with spot options, DescribeInstances, TerminateInstances), Auto
//! Scaling (DescribeAutoScalingGroups, SetDesiredCapacity, TerminateInstanceInAutoScalingGroup) and Lambda
//! (UpdateFunctionConfiguration, PutProvisionedConcurrencyConfig, Invoke). What moto cannot do is pinned as
//! what the adapter must then answer: it has no provisioned-concurrency API (a 404, so the adapter refuses with
//! `provider_failed` and keeps its settings) and runs no function without Docker (a function error, so the
//! invocation fails with the emulator's message). `.ci/run` runs it; `HYSCALE_MOTO_SERVER` names another
//! `moto_server` binary.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyscale_backend::WallClock;
use hyscale_backend::engine::{Dim, ElementType, ModelMetadata, Tensor, TensorInfo};
use hyscale_backend::fsd::services::{LocalService, start_moto};
use hyscale_backend::live::aws::sdk::{aws_config, aws_sdk_autoscaling, aws_sdk_ec2, aws_sdk_lambda, reqwest};
use hyscale_backend::live::aws::{AwsConfig, AwsLambdaFunctions, Ec2Setup, Ec2Vms};
use hyscale_backend::live::aws_asg::AsgVms;
use hyscale_backend::live::provider::{FnFailure, FunctionProvider, VmProvider};
use hyscale_policies::{Catalog, Market};

/// moto on a free loopback port, killed when dropped.
struct Moto {
    service: LocalService,
    url: String,
}

impl Moto {
    fn start() -> Moto {
        let bin = std::env::var_os("HYSCALE_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::path::absolute("../.venv/bin/moto_server").unwrap());
        let service = start_moto(&bin).unwrap();
        let url = service.http_url();
        Moto { service, url }
    }

    /// An IAM role for the function (moto checks that it exists). The SDK has no IAM crate here; the Query
    /// API is one form post.
    fn create_role(&self, name: &str) -> String {
        let port = self.service.port;
        let body = format!("Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument=%7B%7D");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, \
             SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let arn = answer.split("<Arn>").nth(1).and_then(|a| a.split("</Arn>").next());
        arn.unwrap_or_else(|| panic!("CreateRole: {answer}")).to_string()
    }
}

fn catalog() -> Arc<Catalog> {
    hyscale_sim::scenario::Scenario::load(std::path::Path::new("../scenarios/conv_static.toml")).unwrap().catalog
}

fn metadata() -> ModelMetadata {
    let info = |name: &str| TensorInfo {
        name: name.into(),
        element_type: ElementType::F32,
        shape: vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(4)],
    };
    ModelMetadata { inputs: vec![info("input")], outputs: vec![info("output")] }
}

fn aws_config(json: serde_json::Value) -> AwsConfig {
    serde_json::from_value(json).unwrap()
}

fn setup(sdk: &aws_config::SdkConfig, config: AwsConfig) -> Ec2Setup {
    Ec2Setup {
        ec2: aws_sdk_ec2::Client::new(sdk),
        http: reqwest::Client::new(),
        config,
        model: "mlp".into(),
        metadata: metadata(),
    }
}

/// Polls `check` until it answers `Some`, for at most 30 s.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The emulator's instances: (type, spot?, state) of each.
async fn instances(ec2: &aws_sdk_ec2::Client) -> Vec<(String, bool, String)> {
    let out = ec2.describe_instances().send().await.unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
                i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
                i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

async fn desired(asg: &aws_sdk_autoscaling::Client, name: &str) -> (i32, usize) {
    let out = asg.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.unwrap();
    let g = &out.auto_scaling_groups()[0];
    (g.desired_capacity().unwrap_or(-1), g.instances().len())
}

#[test]
fn the_aws_adapters_call_the_real_sdk_against_a_local_emulator() {
    let moto = Moto::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let credentials = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "moto");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .credentials_provider(credentials)
            .load()
            .await;
        let catalog = catalog();
        let c5 = catalog.vm_id("c5.large").unwrap();
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let template = aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id("ami-12c6146b").build();
        ec2.create_launch_template()
            .launch_template_name("hyscale-worker")
            .launch_template_data(template)
            .send()
            .await
            .unwrap();

        // EC2: one RunInstances per worker, spot through InstanceMarketOptions; the workers never answer
        // readiness (the emulator's addresses are not real), so releasing them terminates them at once.
        let config = aws_config(serde_json::json!({
            "function_name": "hyscale-fn", "launch_template": "hyscale-worker", "poll_s": 0.2
        }));
        let vms = Ec2Vms::new(setup(&sdk, config.clone()), &catalog, WallClock::start()).unwrap();
        vms.provision(c5, Market::OnDemand, 2).unwrap();
        vms.provision(c5, Market::Spot, 1).unwrap();
        assert_eq!(vms.state_counts(), (3, 0, 0));
        let launched = eventually("three RunInstances", || async {
            let all = instances(&ec2).await;
            (all.len() == 3).then_some(all)
        })
        .await;
        assert!(launched.iter().all(|(t, _, state)| t == "c5.large" && state == "running"), "{launched:?}");
        assert_eq!(launched.iter().filter(|(_, spot, _)| *spot).count(), 1, "{launched:?}");
        // Wait until the adapter holds every instance id, so the release below is TerminateInstances by id.
        tokio::time::sleep(Duration::from_millis(500)).await;
        vms.release_vms(c5, Market::OnDemand, 2).unwrap();
        vms.release_vms(c5, Market::Spot, 1).unwrap();
        assert_eq!(vms.state_counts(), (0, 0, 0));
        eventually("TerminateInstances of all three", || async {
            let all = instances(&ec2).await;
            all.iter().all(|(_, _, s)| s == "terminated" || s == "shutting-down").then_some(())
        })
        .await;
        vms.shutdown();

        // Auto Scaling: Provision raises the group's desired capacity, Release lowers it again.
        let asg = aws_sdk_autoscaling::Client::new(&sdk);
        let lt = aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
            .launch_template_name("hyscale-worker")
            .version("$Latest")
            .build();
        asg.create_auto_scaling_group()
            .auto_scaling_group_name("hyscale-c5")
            .launch_template(lt)
            .min_size(0)
            .max_size(4)
            .desired_capacity(0)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
        let mut config = config.clone();
        config.vm_provider = hyscale_backend::live::aws::VmProviderKind::Asg;
        config.asg.insert("c5.large".into(), "hyscale-c5".into());
        let group = AsgVms::new(&sdk, setup(&sdk, config), &catalog, WallClock::start()).unwrap();
        assert_eq!(group.provision(c5, Market::Spot, 1), Err("not_sold_on_market".into()));
        group.provision(c5, Market::OnDemand, 2).unwrap();
        eventually("SetDesiredCapacity 2", || async { (desired(&asg, "hyscale-c5").await == (2, 2)).then_some(()) })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        group.release_vms(c5, Market::OnDemand, 2).unwrap();
        eventually("the group back to 0", || async { (desired(&asg, "hyscale-c5").await.0 == 0).then_some(()) }).await;
        group.shutdown();

        // Lambda: memory through UpdateFunctionConfiguration; pre-warm through PutProvisionedConcurrencyConfig
        // on the alias; an invocation through Invoke.
        let role = moto.create_role("hyscale-fn-role");
        let lambda = aws_sdk_lambda::Client::new(&sdk);
        let empty_zip = [b"PK\x05\x06".as_slice(), &[0; 18]].concat();
        lambda
            .create_function()
            .function_name("hyscale-fn")
            .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
            .role(role)
            .handler("bootstrap")
            .code(aws_sdk_lambda::types::FunctionCode::builder().zip_file(empty_zip.into()).build())
            .memory_size(1024)
            .publish(true)
            .send()
            .await
            .unwrap();
        lambda.create_alias().function_name("hyscale-fn").name("live").function_version("1").send().await.unwrap();
        let functions = AwsLambdaFunctions::new(
            lambda.clone(),
            "hyscale-fn".into(),
            Some("live".into()),
            catalog.functions.clone(),
            12.0,
        );
        functions.configure(Some(2048), None, None, None).await.unwrap();
        let conf = lambda.get_function_configuration().function_name("hyscale-fn").send().await.unwrap();
        assert_eq!((conf.memory_size(), conf.timeout()), (Some(2048), Some(12)));
        assert_eq!(functions.settings().memory_mb, 2048);
        // Refused before any call: below Lambda's 128 MB.
        assert_eq!(functions.configure(Some(64), None, None, None).await, Err("invalid_function_settings".into()));
        // moto 5.2 has no provisioned-concurrency API (404): refused as the provider's failure, nothing changed.
        assert_eq!(functions.configure(None, None, None, Some(2)).await, Err("provider_failed".into()));
        assert_eq!(functions.settings().prewarm, 0);
        // moto runs no function without Docker: its function error is the invocation's failure.
        let input = Tensor::new(vec![1, 4], vec![0.5; 4]).unwrap();
        match functions.invoke(&metadata(), &[input]).await {
            Err(FnFailure::Failed(why)) => assert!(why.starts_with("function error"), "{why}"),
            other => panic!("an invocation moto cannot run must fail: {other:?}"),
        }
        assert_eq!(functions.view().busy, 0);
    });
}
