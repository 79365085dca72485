// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Owned} from "./Owned.sol";
import {IAIConfig, IJobRegistry, IWorkerRegistry} from "./IAIConfig.sol";

/// @title SessionManager (lcw devnet)
/// @notice Sessions assigned by on-chain sortition, with the upstream ABI: a consumer requests a
/// session for a model, eligible workers race to claim it once the claim window has widened to
/// them, the consumer provides the session key wrapped for the winner, and JobRegistry adopts the
/// session. Decisions the upstream reference leaves open are listed in contracts/README.md.
contract SessionManager is Owned {
    error AlreadyClaimed(uint256 reqId);
    error MissingCapabilities(address worker, uint256 requiredMask);
    error NotAuthorizedDelegate(address user, address delegate);
    error NotRequestOwner(uint256 reqId);
    error NotSortitionEligible(address worker);
    error RequestExpired(uint256 reqId);
    error RequestNotClaimed(uint256 reqId);
    error RequestNotOpen(uint256 reqId);
    error SeedNotReady(uint256 reqId);
    error SortitionDisabled();
    error UnknownCapabilityBits(uint256 mask);
    error WorkerAtCapacity(address worker);
    error WorkerNotEligibleForClaim(address worker);
    error ZeroAddress();
    // Declared for ABI parity with upstream (OZ Initializable/UUPS set); the devnet never throws them.
    error AddressEmptyCode(address target);
    error ERC1967InvalidImplementation(address implementation);
    error ERC1967NonPayable();
    error FailedCall();
    error InvalidInitialization();
    error NotInitializing();
    error UUPSUnauthorizedCallContext();
    error UUPSUnsupportedProxiableUUID(bytes32 slot);

    event SessionRequested(uint256 indexed reqId, address indexed user, bytes32 indexed modelId, uint256 requestBlock);
    event SessionClaimed(uint256 indexed reqId, address indexed worker);
    event SessionReady(uint256 indexed reqId, uint256 indexed sessionId);
    // Declared for ABI parity with upstream; the devnet never emits them.
    event Initialized(uint64 version);
    event Upgraded(address indexed implementation);

    enum ReqStatus {
        Open,
        Claimed,
        Ready,
        Expired
    }

    /// @notice Returned by getRequest, in upstream field order.
    struct Request {
        address user;
        bytes32 modelId;
        uint64 requestBlock;
        uint64 expiry;
        address worker;
        uint8 status;
    }

    /// @dev Draws are fractions of this scale (see `_claimDelay`).
    uint256 private constant DRAW_SCALE = 1e18;

    IJobRegistry public immutable jobRegistry;
    IWorkerRegistry public immutable workerRegistry;
    IAIConfig public immutable aiConfig;
    address public immutable reputationRegistry;

    uint256 public requestCount;
    mapping(uint256 => Request) private requests;
    mapping(uint256 => uint256) private requiredCapsOf;

    /// @notice The arguments upstream's `initialize` takes; `reputation_` may be zero (the devnet
    /// has no ReputationRegistry: stake alone weights the draw).
    constructor(
        address initialOwner,
        address jobRegistry_,
        address workerRegistry_,
        address aiConfig_,
        address reputation_
    ) Owned(initialOwner) {
        if (jobRegistry_ == address(0) || workerRegistry_ == address(0) || aiConfig_ == address(0)) {
            revert ZeroAddress();
        }
        jobRegistry = IJobRegistry(jobRegistry_);
        workerRegistry = IWorkerRegistry(workerRegistry_);
        aiConfig = IAIConfig(aiConfig_);
        reputationRegistry = reputation_;
    }

    // ------------------------------------------------------------------------------------ requests

    /// @notice Requests a session for `modelId` open until the unix time `expiry`.
    function requestSession(bytes32 modelId, uint256 expiry) external returns (uint256 reqId) {
        return _request(msg.sender, modelId, expiry, 0);
    }

    /// @notice Requests a session on behalf of `user`, by a delegate the user authorized in JobRegistry.
    function requestSessionFor(address user, bytes32 modelId, uint256 expiry) external returns (uint256 reqId) {
        _checkDelegate(user);
        return _request(user, modelId, expiry, 0);
    }

    /// @notice Requests a session whose worker must have every capability bit of `requiredCaps`.
    function requestSessionWithCapabilities(bytes32 modelId, uint256 expiry, uint256 requiredCaps)
        external
        returns (uint256 reqId)
    {
        return _request(msg.sender, modelId, expiry, requiredCaps);
    }

    /// @notice requestSessionWithCapabilities on behalf of `user` (an authorized delegate).
    function requestSessionForWithCapabilities(address user, bytes32 modelId, uint256 expiry, uint256 requiredCaps)
        external
        returns (uint256 reqId)
    {
        _checkDelegate(user);
        return _request(user, modelId, expiry, requiredCaps);
    }

    function _request(address user, bytes32 modelId, uint256 expiry, uint256 caps) private returns (uint256 reqId) {
        if (!aiConfig.getSortitionEnabled()) revert SortitionDisabled();
        if (user == address(0)) revert ZeroAddress();
        reqId = requestCount + 1;
        if (expiry <= block.timestamp || expiry > type(uint64).max) revert RequestExpired(reqId);
        if (caps >> workerRegistry.getCapabilityCount() != 0) revert UnknownCapabilityBits(caps);
        requestCount = reqId;
        Request storage r = requests[reqId];
        r.user = user;
        r.modelId = modelId;
        r.requestBlock = uint64(block.number);
        r.expiry = uint64(expiry);
        r.status = uint8(ReqStatus.Open);
        requiredCapsOf[reqId] = caps;
        emit SessionRequested(reqId, user, modelId, block.number);
    }

    // ------------------------------------------------------------------------------------ claims

    /// @notice Claims request `reqId` for the caller. The first eligible worker to land its claim
    /// wins; later claims revert AlreadyClaimed.
    function claimSession(uint256 reqId) external {
        if (!aiConfig.getSortitionEnabled()) revert SortitionDisabled();
        Request storage r = requests[reqId];
        if (r.status == uint8(ReqStatus.Claimed)) revert AlreadyClaimed(reqId);
        if (r.user == address(0) || r.status != uint8(ReqStatus.Open)) revert RequestNotOpen(reqId);
        if (block.timestamp > r.expiry) revert RequestExpired(reqId);
        if (block.number <= r.requestBlock) revert SeedNotReady(reqId);
        address worker = msg.sender;
        if (!workerRegistry.isEligible(worker, r.modelId)) revert WorkerNotEligibleForClaim(worker);
        uint256 caps = requiredCapsOf[reqId];
        if (workerRegistry.getWorkerCapabilities(worker) & caps != caps) revert MissingCapabilities(worker, caps);
        if (workerRegistry.getActiveJobCount(worker) >= aiConfig.getMaxConcurrentJobs()) {
            revert WorkerAtCapacity(worker);
        }
        if (block.number - r.requestBlock < _claimDelay(reqId, r.requestBlock, worker)) {
            revert NotSortitionEligible(worker);
        }
        r.worker = worker;
        r.status = uint8(ReqStatus.Claimed);
        emit SessionClaimed(reqId, worker);
    }

    /// @notice Whether `worker` may claim `reqId` in this block: the request is open and unexpired,
    /// its seed exists, the worker is eligible for the model, and the claim window has widened to
    /// it. Like upstream it does not check capabilities (nor, here, capacity).
    function eligibleNow(uint256 reqId, address worker) external view returns (bool) {
        Request storage r = requests[reqId];
        if (r.user == address(0) || r.status != uint8(ReqStatus.Open)) return false;
        if (block.timestamp > r.expiry || block.number <= r.requestBlock) return false;
        if (!workerRegistry.isEligible(worker, r.modelId)) return false;
        return block.number - r.requestBlock >= _claimDelay(reqId, r.requestBlock, worker);
    }

    /// @notice The request, with status Expired once its expiry has passed before it became Ready.
    function getRequest(uint256 reqId) external view returns (Request memory r) {
        r = requests[reqId];
        if (r.user != address(0) && r.status < uint8(ReqStatus.Ready) && block.timestamp > r.expiry) {
            r.status = uint8(ReqStatus.Expired);
        }
    }

    /// @notice The capability bits a claimer must have; 0 means unconstrained.
    function getRequiredCapabilities(uint256 reqId) external view returns (uint256) {
        return requiredCapsOf[reqId];
    }

    // ------------------------------------------------------------------------------------ session keys

    /// @notice The requester provides the session key wrapped for the claimer (and the disputer);
    /// JobRegistry adopts the session and the request becomes Ready.
    function provideSessionKey(uint256 reqId, bytes calldata encWorkerKey, bytes calldata encDisputerKey) external {
        Request storage r = requests[reqId];
        if (r.user != msg.sender) revert NotRequestOwner(reqId);
        _ready(reqId, r, encWorkerKey, encDisputerKey);
    }

    /// @notice provideSessionKey on behalf of `user`, by a delegate the user authorized in JobRegistry.
    function provideSessionKeyFor(
        address user,
        uint256 reqId,
        bytes calldata encWorkerKey,
        bytes calldata encDisputerKey
    ) external {
        _checkDelegate(user);
        Request storage r = requests[reqId];
        if (r.user != user) revert NotRequestOwner(reqId);
        _ready(reqId, r, encWorkerKey, encDisputerKey);
    }

    function _ready(uint256 reqId, Request storage r, bytes calldata encWorkerKey, bytes calldata encDisputerKey)
        private
    {
        if (r.status == uint8(ReqStatus.Open)) revert RequestNotClaimed(reqId);
        if (r.status != uint8(ReqStatus.Claimed)) revert RequestNotOpen(reqId);
        if (block.timestamp > r.expiry) revert RequestExpired(reqId);
        r.status = uint8(ReqStatus.Ready);
        uint256 sessionId = jobRegistry.adoptSession(r.user, r.modelId, r.worker, encWorkerKey, encDisputerKey);
        emit SessionReady(reqId, sessionId);
    }

    // ------------------------------------------------------------------------------------ internals

    /// @dev Blocks after the request's block at which `worker` becomes eligible, in [1, window]
    /// (window = AIConfig.getClaimWindowBlocks()). The draw is a fraction in [0, 1) taken from
    /// keccak256(seed, reqId, worker), seed = the hash of the request's block (unknown until the
    /// next block, hence SeedNotReady). A worker at the minimum stake gets a delay uniform over
    /// the window; one with k times the minimum stake k times less, so the window widens over
    /// blocks and more stake means an earlier turn. When the seed is out of reach (more than 256
    /// blocks old) or the window is at most one block, every eligible worker may claim at once.
    /// `lcw_schema::rules::sortition` computes the same rule from the store.
    function _claimDelay(uint256 reqId, uint64 requestBlock, address worker) private view returns (uint256) {
        uint256 window = aiConfig.getClaimWindowBlocks();
        bytes32 seed = blockhash(requestBlock);
        if (window <= 1 || seed == bytes32(0)) return 1;
        uint256 draw = uint256(keccak256(abi.encode(seed, reqId, worker))) % DRAW_SCALE;
        uint256 minStake = aiConfig.getMinWorkerStake();
        uint256 stake = workerRegistry.getWorkerStake(worker);
        if (minStake == 0 || stake < minStake) {
            minStake = 1;
            stake = 1;
        }
        return 1 + (draw * (window - 1) * minStake) / (DRAW_SCALE * stake);
    }

    function _checkDelegate(address user) private view {
        if (msg.sender != user && !jobRegistry.isDelegateAuthorized(user, msg.sender)) {
            revert NotAuthorizedDelegate(user, msg.sender);
        }
    }
}
